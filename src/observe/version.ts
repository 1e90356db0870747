// The version the flow servers report (package.json's), read once.
import fs from 'node:fs';

function readVersion(): string {
  try {
    // dist/src/observe/version.js → the repository's package.json.
    const pkg = JSON.parse(fs.readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as { version?: string };
    return pkg.version ?? 'unknown';
  } catch {
    return 'unknown';
  }
}

export const TENDRIL_VERSION = `tendril ${readVersion()}`;
