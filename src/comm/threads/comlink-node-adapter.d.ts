// comlink ships its Node adapter without types reachable under moduleResolution NodeNext (TS7016); toolchain.md.
declare module 'comlink/dist/esm/node-adapter.mjs' {
  import type { Endpoint } from 'comlink';
  export interface NodeEndpoint {
    postMessage(message: any, transfer?: any): void;
    on(type: string, listener: (...args: any[]) => void, options?: object): void;
    off(type: string, listener: (...args: any[]) => void, options?: object): void;
    start?: () => void;
  }
  export default function nodeEndpoint(nep: NodeEndpoint): Endpoint;
}
