// The datapath as the agent's managers see it: only the verbs each one calls. The agent hands them its
// NodeDatapath; unit tests hand them the in-memory fake of ./testing.ts.
import type { NodeDatapath } from '../datapath/index.js';

/** What EndpointManager does to the datapath: wire an endpoint in (new or restored) and out. */
export type EndpointDatapath = Pick<NodeDatapath, 'addEndpointAsync' | 'restoreEndpoint' | 'removeEndpoint'>;

/** What SecurityManager does to it: an endpoint's new identity, ipcache entries, an endpoint's policy entries, the ipBlock trie. */
export type SecurityDatapath = Pick<NodeDatapath, 'updateEndpoint' | 'ipcacheUpsert' | 'ipcacheDelete' | 'dumpIpcache' | 'setEndpointPolicy' | 'ipBlockSet' | 'ipBlockDelete' | 'dumpIpBlocks'>;
