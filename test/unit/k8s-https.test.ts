// connectKube's own client over HTTPS, as every real cluster serves it: the server certificate checked against
// the kubeconfig's CA (and refused against another CA), a client certificate presented, TLS checking given up
// only when the kubeconfig says so, and the in-cluster service account (token and ca.crt files). Fixtures in
// test/fixtures/tls: a test CA (valid to 2126), a server certificate for 127.0.0.1 and kubernetes.default.svc,
// a client certificate, and an unrelated CA.
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TLSSocket } from 'node:tls';
import { connectKube } from '../../src/sources/kubernetes/client';
import { authOf, inClusterSpec } from '../../src/sources/kubernetes/kubeconfig';

const TLS = join(__dirname, '..', 'fixtures', 'tls');
const pem = (name: string): Buffer => readFileSync(join(TLS, name));
const b64 = (name: string): string => pem(name).toString('base64');

interface Seen {
  authorization: string | undefined;
  clientCn: string | null;
  clientAuthorized: boolean;
}

describe('the Kubernetes client over HTTPS', () => {
  let server: https.Server;
  let port: number;
  let dir: string;
  const seen: Seen[] = [];

  beforeAll(async () => {
    server = https.createServer(
      { key: pem('server.key'), cert: pem('server.crt'), ca: pem('ca.crt'), requestCert: true, rejectUnauthorized: false }, // prettier-ignore
      (req, res) => {
        const sock = req.socket as TLSSocket;
        const peer = sock.getPeerCertificate();
        seen.push({
          authorization: req.headers.authorization,
          clientCn: peer && typeof peer.subject?.CN === 'string' ? peer.subject.CN : null,
          clientAuthorized: sock.authorized,
        });
        res.setHeader('content-type', 'application/json');
        res.end(JSON.stringify({ kind: 'ServiceList', apiVersion: 'v1', metadata: { resourceVersion: '7' }, items: [] })); // prettier-ignore
      },
    );
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    port = (server.address() as AddressInfo).port;
    dir = mkdtempSync(join(tmpdir(), 'k8s-https-'));
  });
  afterAll(async () => {
    server.closeAllConnections();
    await new Promise((r) => server.close(r));
    rmSync(dir, { recursive: true, force: true });
  });

  const kubeconfig = (cluster: string[], user: string[]): string => {
    const path = join(dir, `kubeconfig-${seen.length}-${Math.random().toString(36).slice(2)}`);
    writeFileSync(
      path,
      [
        'apiVersion: v1',
        'kind: Config',
        'clusters:',
        '- name: c',
        '  cluster:',
        `    server: https://127.0.0.1:${port}`,
        ...cluster.map((l) => `    ${l}`),
        'users:',
        '- name: u',
        '  user:',
        ...user.map((l) => `    ${l}`),
        'contexts:',
        '- name: x',
        '  context: {cluster: c, user: u}',
        'current-context: x',
        '',
      ].join('\n'),
    );
    return path;
  };

  const listOnce = async (path: string) => {
    const api = await connectKube({ kubeconfig: path });
    try {
      expect(api.client).toEqual({ kind: 'lite' });
      return await api.services.list();
    } finally {
      api.close?.();
    }
  };

  it('checks the server against the kubeconfig CA and sends the token', async () => {
    const n = seen.length;
    const list = await listOnce(
      kubeconfig([`certificate-authority-data: ${b64('ca.crt')}`], ['token: t-one']),
    );
    expect(list.resourceVersion).toBe('7');
    expect(seen.slice(n)).toEqual([
      { authorization: 'Bearer t-one', clientCn: null, clientAuthorized: false },
    ]);
  });

  it('refuses a server whose certificate another CA signed, and sends nothing to it', async () => {
    const n = seen.length;
    const path = kubeconfig([`certificate-authority-data: ${b64('other-ca.crt')}`], ['token: t-two']);
    await expect(listOnce(path)).rejects.toThrow(/certificate|self[- ]signed|verify/i);
    expect(seen.length).toBe(n);
  });

  it('takes the CA from a file too', async () => {
    const n = seen.length;
    await listOnce(kubeconfig([`certificate-authority: ${join(TLS, 'ca.crt')}`], ['token: t-three']));
    expect(seen.slice(n).map((s) => s.authorization)).toEqual(['Bearer t-three']);
  });

  it('presents a client certificate (data or files), which the server verifies against its CA', async () => {
    const n = seen.length;
    await listOnce(
      kubeconfig(
        [`certificate-authority-data: ${b64('ca.crt')}`],
        [`client-certificate-data: ${b64('client.crt')}`, `client-key-data: ${b64('client.key')}`],
      ),
    );
    await listOnce(
      kubeconfig(
        [`certificate-authority-data: ${b64('ca.crt')}`],
        [`client-certificate: ${join(TLS, 'client.crt')}`, `client-key: ${join(TLS, 'client.key')}`],
      ),
    );
    const who = { authorization: undefined, clientCn: 'system:serviceaccount:peak-xdp:test', clientAuthorized: true }; // prettier-ignore
    expect(seen.slice(n)).toEqual([who, who]);
  });

  it('gives up checking the server only with insecure-skip-tls-verify', async () => {
    const n = seen.length;
    await listOnce(kubeconfig(['insecure-skip-tls-verify: true'], ['token: t-four']));
    expect(seen.slice(n).map((s) => s.authorization)).toEqual(['Bearer t-four']);
  });

  it('in-cluster: the service account token and ca.crt files, over https for any port but the plain-HTTP ones', async () => {
    const sa = join(dir, 'serviceaccount');
    rmSync(sa, { recursive: true, force: true });
    mkdirSync(sa);
    writeFileSync(join(sa, 'token'), 'sa-token\n');
    writeFileSync(join(sa, 'ca.crt'), pem('ca.crt'));
    const spec = inClusterSpec(
      { KUBERNETES_SERVICE_HOST: '127.0.0.1', KUBERNETES_SERVICE_PORT: String(port) },
      sa,
    );
    expect(spec.server).toBe(`https://127.0.0.1:${port}`);
    const auth = await authOf(spec)();
    expect(auth.headers).toEqual({ Authorization: 'Bearer sa-token' });
    // The same material through Node's https verifies the server (what the requester's agent is built from).
    const body = await new Promise<string>((resolve, reject) => {
      const req = https.get(`${spec.server}/api/v1/services`, { headers: auth.headers, ...auth.tls, agent: false }, (res) => {
        let b = '';
        res.on('data', (c: Buffer) => (b += c.toString()));
        res.on('end', () => resolve(b));
      }); // prettier-ignore
      req.on('error', reject);
    });
    expect(JSON.parse(body)).toMatchObject({ kind: 'ServiceList' });
    expect(seen.at(-1)).toEqual({
      authorization: 'Bearer sa-token',
      clientCn: null,
      clientAuthorized: false,
    });
  });
});
