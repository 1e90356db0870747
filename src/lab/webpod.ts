// The lab's small web pod (like the seed's webpod): answers HTTP with the pod's name and addresses.
import dgram from 'node:dgram';
import http from 'node:http';
import os from 'node:os';

const args = process.argv.slice(2);
const opt = (k: string): string | undefined => {
  const i = args.indexOf(k);
  return i >= 0 ? args[i + 1] : undefined;
};
const name = opt('--name') ?? os.hostname();
const ports = (opt('--port') ?? '80').split(',').map(Number);

function handler(req: http.IncomingMessage, res: http.ServerResponse): void {
  const ips = Object.values(os.networkInterfaces())
    .flat()
    .filter((a) => a && a.family === 'IPv4')
    .map((a) => `IP: ${a!.address}`);
  const body = [
    `Hostname: ${name}`,
    ...ips,
    `RemoteAddr: ${req.socket.remoteAddress}:${req.socket.remotePort}`,
    `${req.method} ${req.url} HTTP/${req.httpVersion}`,
    `Host: ${req.headers.host ?? ''}`,
    `User-Agent: ${req.headers['user-agent'] ?? ''}`,
    '',
  ].join('\n');
  res.writeHead(200, { 'content-type': 'text/plain' });
  res.end(body);
}

// Every port answers HTTP on TCP and, on UDP, each datagram with the pod's name and the source it saw, so UDP paths
// (and what a masquerade made of them) can be tested too.
const closers: Array<() => void> = [];
let pending = ports.length;
for (const port of ports) {
  const server = http.createServer(handler);
  const udp = dgram.createSocket('udp4');
  udp.on('message', (msg, rinfo) => udp.send(`${name}: ${msg.toString().trim()} (RemoteAddr: ${rinfo.address}:${rinfo.port})\n`, rinfo.port, rinfo.address));
  closers.push(() => {
    udp.close();
    server.close();
  });
  udp.bind(port, '0.0.0.0', () => {
    server.listen(port, '0.0.0.0', () => {
      if (--pending === 0) process.stdout.write(`webpod ${name} listening on :${ports.join(',')} (tcp, udp)\n`);
    });
  });
}
process.on('SIGTERM', () => {
  for (const c of closers) c();
  process.exit(0);
});
