// The fake API server's paged lists behave like the real one's: later pages come from the first page's
// snapshot at its resourceVersion, and a continue token past compaction is 410 Gone.
import { request } from 'node:http';
import { FakeApiServer } from '../helpers/fake-apiserver';
import { service } from '../helpers/k8s-objects';

interface ListBody {
  metadata: { resourceVersion: string; continue?: string };
  items: { metadata: { name: string; resourceVersion: string } }[];
}

function get(port: number, path: string): Promise<{ status: number; body: unknown }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (text += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: JSON.parse(text) as unknown }));
    });
    req.on('error', reject);
    req.end();
  });
}

describe('FakeApiServer paged lists', () => {
  const api = new FakeApiServer();
  beforeAll(() => api.start());
  afterAll(() => api.stop());

  it('serves every page of one list from one snapshot, then 410 after compaction', async () => {
    for (let i = 1; i <= 5; i++) api.upsert('services', service({ name: `s${i}` }));
    const page = async (query: string): Promise<ListBody> => {
      const r = await get(api.port, `/api/v1/services?${query}`);
      expect(r.status).toBe(200);
      return r.body as ListBody;
    };
    const p1 = await page('limit=2');
    expect(p1.items.map((o) => o.metadata.name)).toEqual(['s1', 's2']);
    const rv = p1.metadata.resourceVersion;
    // Changes between pages: a new Service, and one on a later page modified.
    api.upsert('services', service({ name: 's0' }));
    api.upsert('services', service({ name: 's4', vip: '10.0.0.4' }));
    const p2 = await page(`limit=2&continue=${encodeURIComponent(p1.metadata.continue!)}`);
    expect(p2.metadata.resourceVersion).toBe(rv);
    expect(p2.items.map((o) => o.metadata.name)).toEqual(['s3', 's4']);
    // s4 as it was at the list's version, not the update made after it.
    for (const o of p2.items) expect(Number(o.metadata.resourceVersion)).toBeLessThanOrEqual(Number(rv));
    const p3 = await page(`limit=2&continue=${encodeURIComponent(p2.metadata.continue!)}`);
    expect(p3.items.map((o) => o.metadata.name)).toEqual(['s5']);
    expect(p3.metadata.continue).toBeUndefined();
    // A fresh list sees the changes.
    const all = await page('');
    expect(all.items.map((o) => o.metadata.name)).toEqual(['s0', 's1', 's2', 's3', 's4', 's5']);
    expect(Number(all.metadata.resourceVersion)).toBeGreaterThan(Number(rv));
    // A token whose snapshot was compacted away: 410, so the client re-lists.
    const q1 = await page('limit=3');
    api.compact();
    const gone = await get(
      api.port,
      `/api/v1/services?limit=3&continue=${encodeURIComponent(q1.metadata.continue!)}`,
    );
    expect(gone.status).toBe(410);
  });
});
