// Data for training: byte tokenizer, document sources (text, binary tokens, synthetic), torchtitan packing,
// data-parallel sharding, batching and resumable state.
export { ByteTokenizer, BOS_ID, EOS_ID, BYTE_VOCAB_SIZE } from './tokenizer.ts';
export { shardRange, ShardedDocuments, type DocumentSource, type ShardRange } from './documents.ts';
export { loadTextSource, splitParagraphs, TextSource, TextSourceError } from './text-source.ts';
export { TokenFileSource, TokenSourceError, tokenDTypeOf, type TokenDType } from './token-source.ts';
export { SyntheticSource, syntheticEntropy } from './synthetic.ts';
export { Packer, type PackerPosition } from './packer.ts';
export { checkDataState, DataStateError, type DataState } from './state.ts';
export {
  BUNDLED_TEXT_SAMPLE,
  createDataLoader,
  dataInputProblem,
  DataLoader,
  datasetPathProblem,
  openDataLoader,
  textTokenizerOf,
  type Batch,
  type DataLoaderOptions,
} from './loader.ts';
export {
  HfTokenizer,
  inspectTokenizer,
  TokenizerError,
  type TextTokenizer,
  type TokenizerSpec,
} from './hf-tokenizer.ts';
export { checkParquetColumn, loadParquetTexts, parquetFiles, ParquetSourceError } from './parquet-source.ts';
