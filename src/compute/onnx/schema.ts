// The part of onnx.proto / onnx-data.proto (IR version 10) that the grid reads and writes, as a
// protobufjs reflection descriptor. Defined in code rather than loaded from a .proto file so bundles
// have no file to find at run time. Field names are camelCase on the JS side; the wire uses the ids.

import * as protobuf from 'protobufjs/light';

type Fields = Record<string, { type: string; id: number; rule?: 'repeated'; options?: Record<string, unknown> }>;
const f = (type: string, id: number): Fields[string] => ({ type, id });
const r = (type: string, id: number): Fields[string] => ({ type, id, rule: 'repeated' });
const packed = (type: string, id: number): Fields[string] => ({ type, id, rule: 'repeated', options: { packed: true } });

const descriptor = {
  nested: {
    onnx: {
      nested: {
        AttributeProto: {
          fields: {
            name: f('string', 1), refAttrName: f('string', 21), docString: f('string', 13), type: f('int32', 20),
            f: f('float', 2), i: f('int64', 3), s: f('bytes', 4), t: f('TensorProto', 5), g: f('GraphProto', 6),
            sparseTensor: f('SparseTensorProto', 22), tp: f('TypeProto', 14),
            floats: r('float', 7), ints: r('int64', 8), strings: r('bytes', 9), tensors: r('TensorProto', 10),
            graphs: r('GraphProto', 11), sparseTensors: r('SparseTensorProto', 23), typeProtos: r('TypeProto', 15),
          } as Fields,
        },
        ValueInfoProto: {
          fields: { name: f('string', 1), type: f('TypeProto', 2), docString: f('string', 3), metadataProps: r('StringStringEntryProto', 4) } as Fields,
        },
        NodeProto: {
          fields: {
            input: r('string', 1), output: r('string', 2), name: f('string', 3), opType: f('string', 4), domain: f('string', 7),
            overload: f('string', 8), attribute: r('AttributeProto', 5), docString: f('string', 6),
            metadataProps: r('StringStringEntryProto', 9),
          } as Fields,
        },
        TrainingInfoProto: {
          fields: {
            initialization: f('GraphProto', 1), algorithm: f('GraphProto', 2),
            initializationBinding: r('StringStringEntryProto', 3), updateBinding: r('StringStringEntryProto', 4),
          } as Fields,
        },
        ModelProto: {
          fields: {
            irVersion: f('int64', 1), opsetImport: r('OperatorSetIdProto', 8), producerName: f('string', 2),
            producerVersion: f('string', 3), domain: f('string', 4), modelVersion: f('int64', 5), docString: f('string', 6),
            graph: f('GraphProto', 7), metadataProps: r('StringStringEntryProto', 14), trainingInfo: r('TrainingInfoProto', 20),
            functions: r('FunctionProto', 25),
          } as Fields,
        },
        StringStringEntryProto: { fields: { key: f('string', 1), value: f('string', 2) } as Fields },
        TensorAnnotation: { fields: { tensorName: f('string', 1), quantParameterTensorNames: r('StringStringEntryProto', 2) } as Fields },
        GraphProto: {
          fields: {
            node: r('NodeProto', 1), name: f('string', 2), initializer: r('TensorProto', 5), sparseInitializer: r('SparseTensorProto', 15),
            docString: f('string', 10), input: r('ValueInfoProto', 11), output: r('ValueInfoProto', 12),
            valueInfo: r('ValueInfoProto', 13), quantizationAnnotation: r('TensorAnnotation', 14),
            metadataProps: r('StringStringEntryProto', 16),
          } as Fields,
        },
        TensorProto: {
          fields: {
            dims: r('int64', 1), dataType: f('int32', 2), segment: f('Segment', 3),
            floatData: packed('float', 4), int32Data: packed('int32', 5), stringData: r('bytes', 6), int64Data: packed('int64', 7),
            name: f('string', 8), docString: f('string', 12), rawData: f('bytes', 9), externalData: r('StringStringEntryProto', 13),
            dataLocation: f('int32', 14), doubleData: packed('double', 10), uint64Data: packed('uint64', 11),
            metadataProps: r('StringStringEntryProto', 16),
          } as Fields,
          nested: { Segment: { fields: { begin: f('int64', 1), end: f('int64', 2) } as Fields } },
        },
        SparseTensorProto: { fields: { values: f('TensorProto', 1), indices: f('TensorProto', 2), dims: r('int64', 3) } as Fields },
        TensorShapeProto: {
          fields: { dim: r('Dimension', 1) } as Fields,
          nested: {
            Dimension: {
              oneofs: { value: { oneof: ['dimValue', 'dimParam'] } },
              fields: { dimValue: f('int64', 1), dimParam: f('string', 2), denotation: f('string', 3) } as Fields,
            },
          },
        },
        TypeProto: {
          oneofs: { value: { oneof: ['tensorType', 'sequenceType', 'mapType', 'optionalType', 'sparseTensorType'] } },
          fields: {
            tensorType: f('Tensor', 1), sequenceType: f('Sequence', 4), mapType: f('Map', 5), optionalType: f('Optional', 9),
            sparseTensorType: f('SparseTensor', 8), denotation: f('string', 6),
          } as Fields,
          nested: {
            Tensor: { fields: { elemType: f('int32', 1), shape: f('TensorShapeProto', 2) } as Fields },
            Sequence: { fields: { elemType: f('TypeProto', 1) } as Fields },
            Map: { fields: { keyType: f('int32', 1), valueType: f('TypeProto', 2) } as Fields },
            Optional: { fields: { elemType: f('TypeProto', 1) } as Fields },
            SparseTensor: { fields: { elemType: f('int32', 1), shape: f('TensorShapeProto', 2) } as Fields },
          },
        },
        OperatorSetIdProto: { fields: { domain: f('string', 1), version: f('int64', 2) } as Fields },
        FunctionProto: {
          fields: {
            name: f('string', 1), input: r('string', 4), output: r('string', 5), attribute: r('string', 6),
            attributeProto: r('AttributeProto', 11), node: r('NodeProto', 7), docString: f('string', 8),
            opsetImport: r('OperatorSetIdProto', 9), domain: f('string', 10), overload: f('string', 13),
            valueInfo: r('ValueInfoProto', 12), metadataProps: r('StringStringEntryProto', 14),
          } as Fields,
        },
        // onnx-data.proto: the containers of conformance inputs/outputs that are not plain tensors.
        SequenceProto: {
          fields: {
            name: f('string', 1), elemType: f('int32', 2), tensorValues: r('TensorProto', 3),
            sparseTensorValues: r('SparseTensorProto', 4), sequenceValues: r('SequenceProto', 5),
            mapValues: r('MapProto', 6), optionalValues: r('OptionalProto', 7),
          } as Fields,
        },
        MapProto: {
          fields: { name: f('string', 1), keyType: f('int32', 2), keys: r('int64', 3), stringKeys: r('bytes', 4), values: f('SequenceProto', 5) } as Fields,
        },
        OptionalProto: {
          fields: {
            name: f('string', 1), elemType: f('int32', 2), tensorValue: f('TensorProto', 3), sparseTensorValue: f('SparseTensorProto', 4),
            sequenceValue: f('SequenceProto', 5), mapValue: f('MapProto', 6), optionalValue: f('OptionalProto', 7),
          } as Fields,
        },
      },
    },
  },
};

// protobufjs reads JSON message types as proto3 (implicit presence: zeros not written) unless told;
// onnx.proto is proto2, where an attribute `i: 0` or `axis: 0` must reach the wire.
function markProto2(ns: Record<string, unknown>): void {
  for (const value of Object.values((ns.nested ?? {}) as Record<string, Record<string, unknown>>)) {
    if (value.fields) value.edition = 'proto2';
    markProto2(value);
  }
}
markProto2(descriptor as unknown as Record<string, unknown>);

const root = protobuf.Root.fromJSON(descriptor as protobuf.INamespace);

export const ModelProtoType = root.lookupType('onnx.ModelProto');
export const GraphProtoType = root.lookupType('onnx.GraphProto');
export const TensorProtoType = root.lookupType('onnx.TensorProto');
export const SequenceProtoType = root.lookupType('onnx.SequenceProto');
export const OptionalProtoType = root.lookupType('onnx.OptionalProto');
export const NodeProtoType = root.lookupType('onnx.NodeProto');

/** SequenceProto / OptionalProto elem_type codes. */
export const ValueKind = { UNDEFINED: 0, TENSOR: 1, SPARSE_TENSOR: 2, SEQUENCE: 3, MAP: 4, OPTIONAL: 5 } as const;
