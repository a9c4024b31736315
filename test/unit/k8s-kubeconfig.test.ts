// The lite kubeconfig reader (src/sources/kubernetes/kubeconfig.ts): what it reads itself, what it leaves to
// @kubernetes/client-node (naming the field), errors naming the field and value, in-cluster config, and the
// per-request auth (token precedence, token file re-read, TLS material only for https).
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  accessPlan,
  authOf,
  ClusterSpec,
  inClusterSpec,
  planFromKubeconfig,
  TOKEN_FILE_REREAD_MS,
} from '../../src/sources/kubernetes/kubeconfig';

const doc = (cluster: object, user: object, extra: object = {}): object => ({
  apiVersion: 'v1',
  kind: 'Config',
  clusters: [
    { name: 'other', cluster: { server: 'https://other:6443' } },
    { name: 'c', cluster },
  ],
  users: [{ name: 'u', user }],
  contexts: [{ name: 'ctx', context: { cluster: 'c', user: 'u' } }],
  'current-context': 'ctx',
  ...extra,
});
const where = { path: '/etc/kube/config' };

const specOf = (d: object): ClusterSpec => {
  const p = planFromKubeconfig(d, where);
  if (!p.ok) throw new Error(`needs the client: ${p.needsClient}`);
  return p.spec;
};

describe('planFromKubeconfig', () => {
  it('reads server, CA, TLS name, token and client certificate of the current context', () => {
    const s = specOf(
      doc(
        {
          server: 'https://api.example:6443/',
          'certificate-authority': 'ca.pem',
          'tls-server-name': 'kubernetes',
        },
        {
          token: 'abc',
          'client-certificate': '/abs/cert.pem',
          'client-key-data': Buffer.from('KEY').toString('base64'),
        },
      ),
    );
    expect(s.server).toBe('https://api.example:6443');
    // Relative files are relative to the kubeconfig's directory, as kubectl reads them.
    expect(s.ca).toEqual({ file: '/etc/kube/ca.pem' });
    expect(s.tlsServerName).toBe('kubernetes');
    expect(s.skipTlsVerify).toBe(false);
    expect(s.user.token).toBe('abc');
    expect(s.user.cert).toEqual({ file: '/abs/cert.pem' });
    expect(s.user.key).toEqual({ data: Buffer.from('KEY') });
    expect(s.user.basic).toBeNull();
  });

  it('leaves exec plugins, auth providers, proxies and impersonation to the client, naming the field', () => {
    const cases: [object, object, string][] = [
      [{ server: 'https://a' }, { exec: { command: 'aws' } }, 'users["u"].exec'],
      [{ server: 'https://a' }, { 'auth-provider': { name: 'oidc' } }, 'users["u"].auth-provider'],
      [{ server: 'https://a' }, { as: 'admin' }, 'users["u"].as'],
      [{ server: 'https://a', 'proxy-url': 'http://proxy:3128' }, { token: 't' }, 'clusters["c"].proxy-url'],
    ];
    for (const [cluster, user, field] of cases)
      expect(planFromKubeconfig(doc(cluster, user), where)).toEqual({ ok: false, needsClient: field });
  });

  it('rejects broken kubeconfigs with the field and value', () => {
    expect(() =>
      planFromKubeconfig(doc({ server: 'https://a' }, {}, { 'current-context': '' }), where),
    ).toThrow('kubeconfig /etc/kube/config: current-context "" is not set');
    expect(() =>
      planFromKubeconfig(doc({ server: 'https://a' }, {}, { 'current-context': 'nope' }), where),
    ).toThrow('kubeconfig /etc/kube/config: contexts[] has no context "nope"');
    expect(() => planFromKubeconfig(doc({}, {}), where)).toThrow(
      'kubeconfig /etc/kube/config: clusters["c"].server is missing',
    );
    expect(() => planFromKubeconfig(doc({ server: 'https://a' }, { token: 5 }), where)).toThrow(
      'kubeconfig /etc/kube/config: users["u"].token 5 is not a string',
    );
    expect(() => planFromKubeconfig([], where)).toThrow('kubeconfig /etc/kube/config: not a YAML mapping');
  });
});

describe('inClusterSpec', () => {
  it('builds the service account access from the Pod environment', () => {
    const s = inClusterSpec({ KUBERNETES_SERVICE_HOST: 'fd00::1', KUBERNETES_SERVICE_PORT: '443' }, '/sa');
    expect(s.server).toBe('https://[fd00::1]:443');
    expect(s.ca).toEqual({ file: '/sa/ca.crt' });
    expect(s.user.tokenFile).toBe('/sa/token');
    expect(
      inClusterSpec({ KUBERNETES_SERVICE_HOST: '10.0.0.1', KUBERNETES_SERVICE_PORT: '8080' }).server,
    ).toBe('http://10.0.0.1:8080');
  });

  it('says what is missing outside a Pod', () => {
    expect(() => inClusterSpec({})).toThrow(
      'in-cluster config: KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT are not set',
    );
  });
});

describe('authOf', () => {
  const base: ClusterSpec = {
    server: 'https://api:6443',
    ca: { file: '/sa/ca.crt' },
    skipTlsVerify: false,
    tlsServerName: null,
    user: { token: null, tokenFile: '/sa/token', cert: null, key: null, basic: null },
  };

  it('re-reads the token file only after TOKEN_FILE_REREAD_MS, and the CA at every request', async () => {
    let now = 1_000_000;
    const reads: string[] = [];
    let token = 'one';
    const auth = authOf(base, {
      read: (p) => {
        reads.push(p);
        return Buffer.from(p.endsWith('token') ? `${token}\n` : 'CA');
      },
      now: () => now,
    });
    const first = await auth();
    expect(first.headers.Authorization).toBe('Bearer one');
    expect(first.tls.ca).toEqual(Buffer.from('CA'));
    token = 'two';
    now += TOKEN_FILE_REREAD_MS;
    expect((await auth()).headers.Authorization).toBe('Bearer one');
    now += 1;
    expect((await auth()).headers.Authorization).toBe('Bearer two');
    expect(reads.filter((p) => p.endsWith('token'))).toHaveLength(2);
    expect(reads.filter((p) => p.endsWith('ca.crt'))).toHaveLength(3);
  });

  it('prefers a token over a user name and password, and sends no TLS material over plain HTTP', async () => {
    const files = { read: (): Buffer => Buffer.from('x'), now: () => 0 };
    const both = authOf(
      {
        ...base,
        user: { ...base.user, tokenFile: null, token: 'tok', basic: { username: 'a', password: 'b' } },
      },
      files,
    );
    expect((await both()).headers.Authorization).toBe('Bearer tok');
    const basic = authOf(
      { ...base, user: { ...base.user, tokenFile: null, basic: { username: 'a', password: 'b' } } },
      files,
    );
    expect((await basic()).headers.Authorization).toBe(`Basic ${Buffer.from('a:b').toString('base64')}`);
    const plain = authOf({ ...base, server: 'http://api:8080', skipTlsVerify: true }, files);
    expect((await plain()).tls).toEqual({});
    const skip = authOf({ ...base, skipTlsVerify: true, tlsServerName: 'k' }, files);
    expect((await skip()).tls).toMatchObject({ rejectUnauthorized: false, servername: 'k' });
  });

  it('refuses plain HTTP unless TLS checking was given up, as the client does', () => {
    expect(() => authOf({ ...base, server: 'http://api:8080' })).toThrow(
      'kubeconfig: server http://api:8080 is plain HTTP but insecure-skip-tls-verify is not set',
    );
  });
});

describe('accessPlan', () => {
  let dir: string;
  beforeAll(() => (dir = mkdtempSync(join(tmpdir(), 'k18-kc-'))));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('reads a kubeconfig file, and names the file when it is missing or not YAML', () => {
    const f = join(dir, 'config');
    writeFileSync(
      f,
      'apiVersion: v1\nclusters: [{name: c, cluster: {server: "http://127.0.0.1:1", insecure-skip-tls-verify: true}}]\n' +
        'users: [{name: u, user: {token: t}}]\ncontexts: [{name: x, context: {cluster: c, user: u}}]\ncurrent-context: x\n',
    );
    const p = accessPlan({ kubeconfig: f });
    expect(p.ok && p.spec.server).toBe('http://127.0.0.1:1');
    expect(p.ok && p.spec.skipTlsVerify).toBe(true);
    expect(() => accessPlan({ kubeconfig: join(dir, 'absent') })).toThrow(
      `kubeconfig ${join(dir, 'absent')}: ENOENT`,
    );
    const bad = join(dir, 'bad');
    writeFileSync(bad, 'a: [1,\n');
    expect(() => accessPlan({ kubeconfig: bad })).toThrow(`kubeconfig ${bad}: not YAML`);
    expect(
      accessPlan({ env: { KUBERNETES_SERVICE_HOST: 'h', KUBERNETES_SERVICE_PORT: '443' } }),
    ).toMatchObject({
      ok: true,
      spec: { server: 'https://h:443' },
    });
  });
});
