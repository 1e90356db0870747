// Moved to src/lab/k8s-node.ts (bench uses it too, and bench does not depend on test code); the tests' import path stays.
export * from '../../src/lab/k8s-node.js';
