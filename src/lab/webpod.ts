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
const port = Number(opt('--port') ?? '80');

const server = http.createServer((req, res) => {
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
});
// UDP on the same port answers each datagram with the pod's name, so UDP paths can be tested too.
const udp = dgram.createSocket('udp4');
udp.on('message', (msg, rinfo) => udp.send(`${name}: ${msg.toString().trim()}\n`, rinfo.port, rinfo.address));
udp.bind(port, '0.0.0.0', () => {
  server.listen(port, '0.0.0.0', () => {
    process.stdout.write(`webpod ${name} listening on :${port} (tcp, udp)\n`);
  });
});
process.on('SIGTERM', () => {
  udp.close();
  server.close(() => process.exit(0));
});
