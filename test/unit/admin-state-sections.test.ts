// GET /state?sections=a,b: only those top-level keys, made only if asked for; a name that is not a section is a 400
// naming it. The section list is /state's own keys (stateDocument), in order.
import { get } from 'node:http';
import { Registry } from 'prom-client';
import { AdminServer, parseStateSections, startAdmin } from '../../src/daemon/admin';
import { NO_KEEPER, pickSections, STATE_SECTIONS, stateDocument } from '../../src/daemon/state-view';
import { ComponentErrorLog } from '../../src/daemon/state-view';
import { withOverrideView } from '../../src/daemon/overrides';
import { silentLogger } from '../../src/log';

function fetchOnce(port: number, path: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    get({ host: '127.0.0.1', port, path, agent: false }, (res) => {
      let body = '';
      res.on('data', (d: Buffer) => (body += d.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    }).on('error', reject);
  });
}

describe('/state of many pieces', () => {
  it('is sent as the Buffers it was written into, under their whole length: the text JSON.stringify(doc, null, 2) gives', async () => {
    // ~2.6 MB of text with multi-byte characters: many pieces of STATE_PIECE entries, several chunks
    const doc = { desired: { vips: Array.from({ length: 30_000 }, (_, i) => ({ i, name: `vip-é€𝄞-${i}`, up: i % 2 === 0 })) } }; // prettier-ignore
    const admin = await startAdmin({
      host: '127.0.0.1',
      port: 0,
      readiness: () => ({ ready: true, reasons: [] }),
      logger: silentLogger,
      fdLimit: 65536,
      registry: new Registry(),
      state: async () => doc,
    });
    try {
      const r = await new Promise<{ length: string | undefined; body: Buffer }>((resolve, reject) => {
        get({ host: '127.0.0.1', port: admin.address.port, path: '/state', agent: false }, (res) => {
          const parts: Buffer[] = [];
          res.on('data', (d: Buffer) => parts.push(d));
          res.on('end', () => resolve({ length: res.headers['content-length'], body: Buffer.concat(parts) }));
        }).on('error', reject);
      });
      const text = JSON.stringify(doc, null, 2) + '\n';
      expect(r.body.toString()).toBe(text);
      expect(r.length).toBe(String(Buffer.byteLength(text)));
    } finally {
      await admin.stop();
    }
  });
});

describe('/state sections', () => {
  let admin: AdminServer | null = null;
  let bare: AdminServer | null = null;
  const asked: (string[] | null)[] = [];
  const doc = { interface: 'eth0', desired: { vips: [] }, health: [{ vip: 'web' }], bgp: null };

  beforeAll(async () => {
    const base = {
      host: '127.0.0.1',
      port: 0,
      readiness: () => ({ ready: true, reasons: [] }),
      logger: silentLogger,
      fdLimit: 65536,
    };
    admin = await startAdmin({
      ...base,
      registry: new Registry(),
      state: async (sections) => {
        asked.push(sections === null ? null : [...sections]);
        return pickSections(doc, sections);
      },
      stateSections: ['interface', 'desired', 'health', 'bgp'],
    });
    bare = await startAdmin({ ...base, registry: new Registry(), state: async () => doc });
  });
  afterAll(async () => {
    await admin?.stop();
    await bare?.stop();
  });

  it('shows only the sections asked for, in the document order; all without the parameter', async () => {
    const port = admin!.address.port;
    asked.length = 0;
    const some = await fetchOnce(port, '/state?sections=health,interface');
    expect(some.status).toBe(200);
    expect(JSON.parse(some.body)).toEqual({ interface: 'eth0', health: [{ vip: 'web' }] });
    expect(Object.keys(JSON.parse(some.body))).toEqual(['interface', 'health']);
    const all = await fetchOnce(port, '/state');
    expect(JSON.parse(all.body)).toEqual(doc);
    expect(asked).toEqual([['health', 'interface'], null]);
  });

  it('a name that is not a section: 400 naming it, and the document is not made', async () => {
    const port = admin!.address.port;
    asked.length = 0;
    for (const q of ['health,actual', '', ',']) {
      const r = await fetchOnce(port, `/state?sections=${q}`);
      expect(r.status).toBe(400);
      expect(r.body).toMatch(
        /^sections: ".*" is not a \/state section \(one or more of interface, desired, health, bgp/,
      );
    }
    expect((await fetchOnce(port, '/state?sections=health,actual')).body).toContain('"actual"');
    expect(asked).toEqual([]);
    // A /state without sections to choose from (the decap's) refuses the parameter.
    const r = await fetchOnce(bare!.address.port, '/state?sections=interface');
    expect(r.status).toBe(400);
    expect(r.body).toMatch(/this \/state has no sections/);
  });

  it('parseStateSections trims and drops empty names', () => {
    expect(parseStateSections(' desired , bgp,', ['desired', 'bgp'])).toEqual({
      sections: new Set(['desired', 'bgp']),
    });
    expect(parseStateSections(null, [])).toEqual({ sections: null });
  });

  it("STATE_SECTIONS are the daemon's /state keys, in order", () => {
    const full = withOverrideView(
      stateDocument({
        startedAt: 'now',
        ifname: 'eth0',
        keeper: NO_KEEPER,
        programmer: {
          lastReconcile: null,
          reconcileError: null,
          failedVips: new Map(),
          cleanupFailures: [],
          desired: null,
        },
        readiness: { ready: true, reasons: [] },
        datapathConfig: null,
        componentErrors: new ComponentErrorLog(),
        announcements: null,
        reloadError: null,
        actual: null,
        health: [],
        bgp: null,
        kubernetes: null,
        vipRoutes: null,
      }),
      {},
      null,
    );
    expect(Object.keys(full)).toEqual([...STATE_SECTIONS]);
    // only the asked ones, in STATE_SECTIONS order whatever the order asked
    expect(Object.keys(pickSections(full, new Set(['overrides', 'desired', 'interface'])))).toEqual([
      'interface',
      'desired',
      'overrides',
    ]);
  });
});
