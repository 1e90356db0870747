// Public surface of L2 announcements: the responder map layout and the agent's lease-based announcer.
export * from './maps.js';
export { L2Announcer, DEFAULT_L2_LEASE_MS, DEFAULT_L2_RENEW_MS, GARP_ROUNDS, type L2AnnouncerOptions, type L2AnnouncementView, type L2LeaseSpec } from './announcer.js';
export { garpFrame, garpFrames, ARPOP_REQUEST, ARPOP_REPLY, GARP_FRAME_LEN } from './garp.js';
