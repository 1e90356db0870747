// Public surface of L2 announcements: the responder map layout and the agent's lease-based announcer.
export * from './maps.js';
