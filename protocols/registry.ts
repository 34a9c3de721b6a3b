import type { Codec } from './codec.js';
import { boltCodec } from './bolt/index.js';
import { dubboCodec } from './dubbo/index.js';
import { hsfCodec } from './hsf/index.js';

/** Every codec, in sniffing order. Adding a protocol means adding its folder and a line here. */
export const codecs: readonly Codec[] = [boltCodec, dubboCodec, hsfCodec];

export const findCodec = (name: string): Codec | undefined => codecs.find((c) => c.name === name);
