// The node's hand-written request checks (src/node/rpc/request-checks.ts) against their zod schemas: a check
// may accept only what its schema accepts unchanged; on the values a frame can carry (JSON.parse's), it
// accepts exactly what the schema accepts, so the hot request never falls back to the schema, but for ids
// over 1024 UTF-16 units, which it leaves to the schema (zod counts code points there).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { RunInference } from '../../src/core/protocol/messages';
import { REQUEST_CHECKS } from '../../src/node/rpc/request-checks';

const check = REQUEST_CHECKS.get(RunInference.type)!;
const schema = RunInference.request;

/** Data a client can send in a run-inference frame, accepted and refused, as JSON text. */
function wireCases(): string[] {
  const ids: unknown[] = ['mlp', 'a', 'mlp@3', 'x'.repeat(1024), 'x'.repeat(1025), '', 'é'.repeat(1024), '😀'.repeat(512), '😀'.repeat(513), 5, null, true, [], {}, ['mlp']];
  const outputs: unknown[] = [undefined, [], ['y'], ['y', 'z'], Array(4096).fill('y'), Array(4097).fill('y'), 'y', [1], [null], [['y']], {}, null, [''], Array.from({ length: 4096 }, (_, i) => (i === 4095 ? 7 : 'o'))];
  const out: string[] = [];
  for (const id of ids) {
    for (const o of outputs) {
      const d: Record<string, unknown> = { model_id: id };
      if (o !== undefined) d.outputs = o;
      out.push(JSON.stringify(d));
    }
  }
  for (const text of [
    'null', '1', '"mlp"', '[]', '{}', '[{"model_id":"mlp"}]', '{"outputs":["y"]}',
    '{"model_id":"mlp","extra":1}', '{"model_id":"mlp","__proto__":{}}', '{"__proto__":{"model_id":"mlp"}}',
    '{"model_id":"mlp","outputs":null}', '{"model_id":"mlp","outputs":{"0":"y","length":1}}', '{"model_id":"mlp","model_id":""}',
    '{"model_id":"","model_id":"mlp"}', '{"Model_id":"mlp"}', '{"model_id":"mlp","toString":"x"}',
  ]) out.push(text);
  return out;
}

test('on every value a frame can carry, the check accepts exactly what the schema accepts', () => {
  let accepted = 0;
  let leftToSchema = 0;
  for (const text of wireCases()) {
    const fast = check(JSON.parse(text));
    const parsed = schema.safeParse(JSON.parse(text));
    if (fast) assert.ok(parsed.success, `check accepts what the schema refuses: ${text.slice(0, 120)}`);
    const id = (JSON.parse(text) as { model_id?: unknown } | null)?.model_id;
    if (typeof id === 'string' && id.length > 1024) { leftToSchema++; continue; }
    assert.equal(fast, parsed.success, `check ${fast ? 'accepts' : 'refuses'} ${text.slice(0, 120)}, the schema ${parsed.success ? 'accepts' : 'refuses'} it`);
    if (fast) {
      accepted++;
      // Accepted data is used as it came: it must be what the schema hands on.
      assert.deepEqual(JSON.parse(text), parsed.data, text.slice(0, 120));
    }
  }
  assert.ok(accepted >= 20, `only ${accepted} accepted cases`);
  assert.ok(leftToSchema > 0 && leftToSchema < 60, `${leftToSchema} cases left to the schema`);
});

test('values no frame carries are never accepted unless the schema accepts them', () => {
  class Request { model_id = 'mlp'; }
  const odd: unknown[] = [
    undefined, Object.assign(Object.create(null) as object, { model_id: 'mlp' }), new Request(),
    { model_id: 'mlp', outputs: undefined }, { model_id: 'mlp', outputs: Object.assign(new Array<string>(2), { 1: 'y' }) }, { model_id: new String('mlp') },
    Object.assign(Object.create({ extra: 1 }) as object, { model_id: 'mlp' }), { model_id: 'mlp', outputs: Object.assign(['y'], { extra: 1 }) },
    { get model_id() { return 'mlp'; } },
  ];
  for (const d of odd) if (check(d)) assert.ok(schema.safeParse(d).success, `check accepts what the schema refuses: ${String(d)}`);
});
