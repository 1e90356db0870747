// The agent's surface: the daemon, its configuration, and the API contract its clients read.
export { Agent } from './agent.js';
export { agentConfig, DEFAULT_SOCKET, type AgentConfig } from './config.js';
export type * from './api.js';
