export * from './types';
export * from './model';
export * from './tensor-proto';
export * from './conformance';
