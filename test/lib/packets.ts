// Moved to src/lab/packets.ts (bench uses it too, and bench does not depend on test code); the tests' import path stays.
export * from '../../src/lab/packets.js';
