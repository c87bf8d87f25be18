// protobufjs message <-> the plain objects of ./types. int64 fields are read as decimal strings (exact),
// then turned into numbers where they are sizes, versions or attribute ints; tensor elements stay strings.

import type * as protobuf from 'protobufjs/light';

// Every int64 field of the schema that is a count, size, version or attribute value.
const NUMERIC_INT64_KEYS = new Set(['irVersion', 'modelVersion', 'version', 'i', 'ints', 'dims', 'dimValue', 'begin', 'end', 'keys']);

function walk(value: unknown): void {
  if (Array.isArray(value)) {
    if (value.length > 0 && typeof value[0] === 'object' && value[0] !== null && !ArrayBuffer.isView(value[0])) {
      for (const v of value) walk(v);
    }
    return;
  }
  if (typeof value !== 'object' || value === null || ArrayBuffer.isView(value)) return;
  const obj = value as Record<string, unknown>;
  for (const key of Object.keys(obj)) {
    const v = obj[key];
    if (NUMERIC_INT64_KEYS.has(key)) {
      if (typeof v === 'string') obj[key] = Number(v);
      else if (Array.isArray(v)) obj[key] = v.map(Number);
    } else if (typeof v === 'object' && v !== null) {
      walk(v);
    }
  }
}

/** A decoded message as a plain object of ./types. Bytes fields stay views of the decoded buffer. */
export function fromProtoObject(type: protobuf.Type, msg: protobuf.Message): unknown {
  const obj = type.toObject(msg, { longs: String, arrays: false, defaults: false });
  walk(obj);
  return obj;
}
