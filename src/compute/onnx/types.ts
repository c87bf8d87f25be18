// Plain-object shapes of the decoded ONNX messages (camelCase fields, int64 fields as numbers except
// tensor int64/uint64 element data, which stay exact as decimal strings).

export interface OnnxStringEntry { key?: string; value?: string }

export interface OnnxTensorProto {
  name?: string;
  dims?: number[];
  dataType?: number;
  segment?: { begin?: number; end?: number };
  rawData?: Uint8Array;
  floatData?: number[];
  int32Data?: number[];
  stringData?: Uint8Array[];
  int64Data?: (string | number)[];
  doubleData?: number[];
  uint64Data?: (string | number)[];
  externalData?: OnnxStringEntry[];
  dataLocation?: number;
  docString?: string;
  metadataProps?: OnnxStringEntry[];
}

export interface OnnxSparseTensorProto { values?: OnnxTensorProto; indices?: OnnxTensorProto; dims?: number[] }

export interface OnnxDimension { dimValue?: number; dimParam?: string; denotation?: string }

export interface OnnxTypeProto {
  tensorType?: { elemType?: number; shape?: { dim?: OnnxDimension[] } };
  sequenceType?: { elemType?: OnnxTypeProto };
  mapType?: { keyType?: number; valueType?: OnnxTypeProto };
  optionalType?: { elemType?: OnnxTypeProto };
  sparseTensorType?: { elemType?: number; shape?: { dim?: OnnxDimension[] } };
  denotation?: string;
}

export interface OnnxValueInfo { name?: string; type?: OnnxTypeProto; docString?: string }

/** AttributeProto.AttributeType */
export const AttributeType = {
  UNDEFINED: 0, FLOAT: 1, INT: 2, STRING: 3, TENSOR: 4, GRAPH: 5, FLOATS: 6, INTS: 7, STRINGS: 8,
  TENSORS: 9, GRAPHS: 10, SPARSE_TENSOR: 11, SPARSE_TENSORS: 12, TYPE_PROTO: 13, TYPE_PROTOS: 14,
} as const;

export interface OnnxAttribute {
  name?: string;
  type?: number;
  refAttrName?: string;
  docString?: string;
  f?: number;
  i?: number;
  s?: Uint8Array;
  t?: OnnxTensorProto;
  g?: OnnxGraph;
  floats?: number[];
  ints?: number[];
  strings?: Uint8Array[];
  tensors?: OnnxTensorProto[];
  graphs?: OnnxGraph[];
}

export interface OnnxNode {
  input?: string[];
  output?: string[];
  name?: string;
  opType?: string;
  domain?: string;
  attribute?: OnnxAttribute[];
  docString?: string;
}

export interface OnnxGraph {
  node?: OnnxNode[];
  name?: string;
  initializer?: OnnxTensorProto[];
  sparseInitializer?: OnnxSparseTensorProto[];
  docString?: string;
  input?: OnnxValueInfo[];
  output?: OnnxValueInfo[];
  valueInfo?: OnnxValueInfo[];
}

export interface OnnxOpset { domain?: string; version?: number }

export interface OnnxModel {
  irVersion?: number;
  opsetImport?: OnnxOpset[];
  producerName?: string;
  producerVersion?: string;
  domain?: string;
  modelVersion?: number;
  docString?: string;
  graph?: OnnxGraph;
  metadataProps?: OnnxStringEntry[];
}
