// Forward models built in code (no PyTorch here): an MLP and a small CNN for 8x8 images, as ONNX
// bytes with seeded He-uniform initial weights, named like PyTorch exports them (fc1.weight, …).

import type { Tensor } from '../../core/protocol/tensor';
import { encodeModel, floatAttribute, makeAttribute, makeNode, makeValueInfo } from '../onnx/model';
import { ONNX_DTYPE_CODES, tensorToProto } from '../onnx/tensor-proto';
import type { OnnxNode, OnnxTensorProto } from '../onnx/types';
import type { FloatType } from './ir';

export type Activation = 'relu' | 'leaky_relu' | 'tanh' | 'sigmoid';

export interface BuildOptions {
  /** Seed of the initial weights; equal seeds give equal models. */
  seed?: number;
  dtype?: FloatType;
  /** Name of the data input; 'input' by default. */
  inputName?: string;
  /** Name of the output (logits); 'logits' by default. */
  outputName?: string;
}

export interface MlpOptions extends BuildOptions {
  activation?: Activation;
  /** Dropout ratio after each hidden activation (0 = none). */
  dropout?: number;
  /** BatchNormalization after each hidden Gemm. */
  batchNorm?: boolean;
  /** Append a Softmax, as many exported classifiers do (plans fold it into the cross-entropy). */
  softmax?: boolean;
}

/** mulberry32: small, fast, good enough for weight init and shuffling. */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

class ModelParts {
  readonly nodes: OnnxNode[] = [];
  readonly inits: OnnxTensorProto[] = [];
  readonly rand: () => number;
  readonly dtype: FloatType;

  constructor(seed: number, dtype: FloatType) {
    this.rand = seededRandom(seed);
    this.dtype = dtype;
  }

  tensor(name: string, dims: number[], fill: (i: number) => number): string {
    const n = dims.reduce((a, b) => a * b, 1);
    const data = this.dtype === 'float32' ? new Float32Array(n) : new Float64Array(n);
    for (let i = 0; i < n; i++) data[i] = fill(i);
    this.inits.push(tensorToProto(name, { dtype: this.dtype, dims, data } as Tensor));
    return name;
  }

  uniform(name: string, dims: number[], bound: number): string {
    return this.tensor(name, dims, () => (this.rand() * 2 - 1) * bound);
  }

  int64(name: string, values: number[]): string {
    this.inits.push(tensorToProto(name, { dtype: 'int64', dims: [values.length], data: BigInt64Array.from(values.map(BigInt)) }));
    return name;
  }

  activation(kind: Activation, x: string, out: string): void {
    if (kind === 'relu') this.nodes.push(makeNode('Relu', [x], [out]));
    else if (kind === 'tanh') this.nodes.push(makeNode('Tanh', [x], [out]));
    else if (kind === 'sigmoid') this.nodes.push(makeNode('Sigmoid', [x], [out]));
    else this.nodes.push(makeNode('LeakyRelu', [x], [out], [floatAttribute('alpha', 0.01)]));
  }

  batchNorm(prefix: string, x: string, out: string, channels: number): void {
    const scale = this.tensor(`${prefix}.weight`, [channels], () => 1);
    const bias = this.tensor(`${prefix}.bias`, [channels], () => 0);
    const mean = this.tensor(`${prefix}.running_mean`, [channels], () => 0);
    const variance = this.tensor(`${prefix}.running_var`, [channels], () => 1);
    this.nodes.push(makeNode('BatchNormalization', [x, scale, bias, mean, variance], [out], [floatAttribute('epsilon', 1e-5), floatAttribute('momentum', 0.9)], prefix));
  }

  model(name: string, input: { name: string; dims: (number | string)[] }, output: { name: string; dims: (number | string)[] }): Uint8Array {
    const code = ONNX_DTYPE_CODES[this.dtype];
    return encodeModel({
      irVersion: 8,
      opsetImport: [{ domain: '', version: 17 }],
      producerName: 'grid-workbench',
      graph: { name, node: this.nodes, initializer: this.inits, input: [makeValueInfo(input.name, code, input.dims)], output: [makeValueInfo(output.name, code, output.dims)] },
    });
  }
}

/** A multi-layer perceptron: sizes [in, hidden…, out], Gemm layers with activations between. */
export function mlp(sizes: readonly number[], opts: MlpOptions = {}): Uint8Array {
  if (!Array.isArray(sizes) || sizes.length < 2 || sizes.some((s) => !Number.isInteger(s) || s <= 0)) {
    throw new RangeError('sizes must list at least two positive integer layer widths, e.g. [64, 64, 10]');
  }
  const p = new ModelParts(opts.seed ?? 1, opts.dtype ?? 'float32');
  const inputName = opts.inputName ?? 'input';
  const outputName = opts.outputName ?? 'logits';
  let x = inputName;
  const layers = sizes.length - 1;
  for (let l = 0; l < layers; l++) {
    const fanIn = sizes[l]!, fanOut = sizes[l + 1]!;
    const last = l === layers - 1;
    const w = p.uniform(`fc${l + 1}.weight`, [fanOut, fanIn], Math.sqrt((last ? 3 : 6) / fanIn));
    const b = p.uniform(`fc${l + 1}.bias`, [fanOut], 1 / Math.sqrt(fanIn));
    const y = last && !opts.softmax ? outputName : `fc${l + 1}`;
    p.nodes.push(makeNode('Gemm', [x, w, b], [y], [makeAttribute('transB', 1)], `fc${l + 1}`));
    x = y;
    if (last) break;
    if (opts.batchNorm) {
      p.batchNorm(`bn${l + 1}`, x, `bn${l + 1}`, fanOut);
      x = `bn${l + 1}`;
    }
    p.activation(opts.activation ?? 'relu', x, `act${l + 1}`);
    x = `act${l + 1}`;
    if (opts.dropout) {
      const ratio = p.tensor(`dropout${l + 1}.ratio`, [], () => opts.dropout!);
      p.nodes.push(makeNode('Dropout', [x, ratio], [`drop${l + 1}`], [], `dropout${l + 1}`));
      x = `drop${l + 1}`;
    }
  }
  if (opts.softmax) p.nodes.push(makeNode('Softmax', [x], [outputName], [makeAttribute('axis', -1)], 'softmax'));
  return p.model('mlp', { name: inputName, dims: ['N', sizes[0]!] }, { name: outputName, dims: ['N', sizes[layers]!] });
}

export interface CnnOptions extends BuildOptions {
  /** Image side; the input is [N, side²] and reshaped to [N, 1, side, side]. 8 by default. */
  side?: number;
  classes?: number;
  /** Channels of the two conv layers; [8, 16] by default. */
  channels?: [number, number];
  batchNorm?: boolean;
  dropout?: number;
  /** 'max' (default) or 'average' pooling. */
  pool?: 'max' | 'average';
  /** Take images [N, 1, side, side] as PyTorch exports do, instead of flat rows [N, side²]. */
  imageInput?: boolean;
}

/** A small CNN for square one-channel images given as flat rows: Conv-ReLU-Pool ×2, GlobalAveragePool-free flatten, Gemm. */
export function cnn(opts: CnnOptions = {}): Uint8Array {
  const side = opts.side ?? 8;
  const classes = opts.classes ?? 10;
  const [c1, c2] = opts.channels ?? [8, 16];
  if (side % 4 !== 0) throw new RangeError('opts.side must be a multiple of 4 (two 2x2 poolings)');
  const p = new ModelParts(opts.seed ?? 1, opts.dtype ?? 'float32');
  const inputName = opts.inputName ?? 'input';
  const outputName = opts.outputName ?? 'logits';
  const pool = opts.pool === 'average' ? 'AveragePool' : 'MaxPool';
  let x = inputName;
  if (!opts.imageInput) {
    p.nodes.push(makeNode('Reshape', [inputName, p.int64('image_shape', [-1, 1, side, side])], ['image']));
    x = 'image';
  }
  let inC = 1;
  [c1, c2].forEach((outC, i) => {
    const k = `conv${i + 1}`;
    const fanIn = inC * 9;
    const w = p.uniform(`${k}.weight`, [outC, inC, 3, 3], Math.sqrt(6 / fanIn));
    const b = p.uniform(`${k}.bias`, [outC], 1 / Math.sqrt(fanIn));
    p.nodes.push(makeNode('Conv', [x, w, b], [k], [makeAttribute('kernel_shape', [3, 3]), makeAttribute('pads', [1, 1, 1, 1])], k));
    x = k;
    if (opts.batchNorm) {
      p.batchNorm(`bn${i + 1}`, x, `bn${i + 1}`, outC);
      x = `bn${i + 1}`;
    }
    p.nodes.push(makeNode('Relu', [x], [`relu${i + 1}`]));
    p.nodes.push(makeNode(pool, [`relu${i + 1}`], [`pool${i + 1}`], [makeAttribute('kernel_shape', [2, 2]), makeAttribute('strides', [2, 2])], `pool${i + 1}`));
    x = `pool${i + 1}`;
    inC = outC;
  });
  p.nodes.push(makeNode('Flatten', [x], ['flat'], [makeAttribute('axis', 1)]));
  x = 'flat';
  if (opts.dropout) {
    const ratio = p.tensor('dropout.ratio', [], () => opts.dropout!);
    p.nodes.push(makeNode('Dropout', [x, ratio], ['drop'], [], 'dropout'));
    x = 'drop';
  }
  const feat = c2 * (side / 4) * (side / 4);
  const w = p.uniform('fc.weight', [classes, feat], Math.sqrt(3 / feat));
  const b = p.uniform('fc.bias', [classes], 1 / Math.sqrt(feat));
  p.nodes.push(makeNode('Gemm', [x, w, b], [outputName], [makeAttribute('transB', 1)], 'fc'));
  const inputDims = opts.imageInput ? ['N', 1, side, side] : ['N', side * side];
  return p.model('cnn', { name: inputName, dims: inputDims }, { name: outputName, dims: ['N', classes] });
}
