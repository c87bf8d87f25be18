// Image-like tensors as PNG: HxW, 1xHxW, CxHxW and 1xCxHxW with C of 1 (grey) or 3 (RGB), values in
// 0..255 (which covers 0..1 pixels, 0..16 digits and 0..255 bytes). Values are stretched by min/max so
// dim images and 0..16 digits are visible, and small images are scaled up by a whole factor
// (nearest neighbour) so an 8x8 digit is not an 8-pixel speck in the notebook.

import { PNG } from 'pngjs';
import { elementCount, type Tensor } from '../core/protocol/tensor';
import { elementAt } from './tensor-format';

export interface ImageLayout {
  channels: 1 | 3;
  height: number;
  width: number;
}

const MIN_SIDE = 8;
const MAX_SIDE = 4096;
/** Small images are scaled up until their longer side reaches this. */
export const TARGET_SIDE = 128;

export function imageLayout(t: Tensor): ImageLayout | undefined {
  if (t.dtype === 'string' || t.dtype === 'bool') return undefined;
  let dims = [...t.dims];
  if (dims.length === 4 && dims[0] === 1) dims = dims.slice(1);
  let channels: number;
  let height: number;
  let width: number;
  if (dims.length === 2) [channels, height, width] = [1, dims[0]!, dims[1]!];
  else if (dims.length === 3) [channels, height, width] = dims as [number, number, number];
  else return undefined;
  if (channels !== 1 && channels !== 3) return undefined;
  if (height < MIN_SIDE || width < MIN_SIDE || height > MAX_SIDE || width > MAX_SIDE) return undefined;
  const n = elementCount(t.dims);
  for (let i = 0; i < n; i++) {
    const v = Number(elementAt(t, i));
    if (!(v >= 0 && v <= 255)) return undefined; // also rejects NaN
  }
  return { channels, height, width };
}

/** Encodes an image-like tensor (see imageLayout) as PNG bytes, scaled by `scaleFor(layout)`. */
export function tensorToPng(t: Tensor, layout: ImageLayout): Uint8Array {
  const { channels, height, width } = layout;
  const n = elementCount(t.dims);
  let min = Infinity;
  let max = -Infinity;
  for (let i = 0; i < n; i++) {
    const v = Number(elementAt(t, i));
    if (v < min) min = v;
    if (v > max) max = v;
  }
  // A flat image has no range to stretch; read it on the scale its maximum suggests.
  const range = max > min ? max - min : max <= 1 ? 1 : max <= 16 ? 16 : 255;
  const low = max > min ? min : 0;
  const k = scaleFor(layout);
  const png = new PNG({ width: width * k, height: height * k });
  const plane = height * width;
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const rgb = [0, 0, 0];
      for (let c = 0; c < 3; c++) {
        const v = Number(elementAt(t, (channels === 3 ? c * plane : 0) + y * width + x));
        rgb[c] = Math.round(((v - low) / range) * 255);
      }
      for (let dy = 0; dy < k; dy++) {
        for (let dx = 0; dx < k; dx++) {
          const p = ((y * k + dy) * width * k + (x * k + dx)) * 4;
          png.data[p] = rgb[0]!;
          png.data[p + 1] = rgb[1]!;
          png.data[p + 2] = rgb[2]!;
          png.data[p + 3] = 255;
        }
      }
    }
  }
  const bytes = PNG.sync.write(png, { colorType: channels === 3 ? 2 : 0 });
  return new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

/** The whole-number upscale factor for an image of this size. */
export function scaleFor(layout: ImageLayout): number {
  return Math.max(1, Math.ceil(TARGET_SIDE / Math.max(layout.height, layout.width)));
}
