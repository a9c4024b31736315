// Config of issue 15: backends[].encap, vips[].encap and stateless, encap.guePort, secondChance; defaults,
// inheritance, and bad values refused whole with the field and the value named.
import { validateConfig } from '../../src/model';

const base = (vip: Record<string, unknown> = {}, top: Record<string, unknown> = {}) => ({
  interface: 'eth0',
  ...top,
  vips: [
    {
      name: 'web',
      address: '10.0.0.10',
      port: 80,
      backends: [{ address: '10.1.0.1' }, { address: '10.1.0.2', encap: 'gue' }],
      ...vip,
    },
  ],
});

function ok(input: unknown) {
  const r = validateConfig(input);
  if (!r.ok) throw new Error(r.errors.map((e) => `${e.path}: ${e.message}`).join('; '));
  return r;
}
function errors(input: unknown): string[] {
  const r = validateConfig(input);
  if (r.ok) throw new Error('accepted');
  return r.errors.map((e) => `${e.path}: ${e.message}`);
}

describe('encap and second-chance config', () => {
  test('defaults: ipip, stateless auto, GUE port 6080, second chance on for 300 s', () => {
    const { config } = ok(base({ backends: [{ address: '10.1.0.1' }] }));
    expect(config.encap).toEqual({ guePort: 6080 });
    expect(config.secondChance).toEqual({ enabled: true, retainSeconds: 300 });
    expect(config.vips[0]!.encap).toBe('ipip');
    expect(config.vips[0]!.stateless).toBe('auto');
    expect(config.vips[0]!.backends[0]!.encap).toBe('ipip');
  });

  test("a backend's encap wins over the VIP's, which backends that do not say take", () => {
    const { config } = ok(
      base({ encap: 'gue', backends: [{ address: '10.1.0.1' }, { address: '10.1.0.2', encap: 'ipip' }] }),
    );
    expect(config.vips[0]!.backends.map((b) => b.encap)).toEqual(['gue', 'ipip']);
    const { config: c2 } = ok(base());
    expect(c2.vips[0]!.backends.map((b) => b.encap)).toEqual(['ipip', 'gue']);
  });

  test('stateless accepts auto, true and false; settings sections are read', () => {
    for (const v of ['auto', true, false] as const)
      expect(ok(base({ stateless: v })).config.vips[0]!.stateless).toBe(v);
    const { config } = ok(
      base({}, { encap: { guePort: 7000 }, secondChance: { enabled: false, retainSeconds: 900 } }),
    );
    expect(config.encap).toEqual({ guePort: 7000 });
    expect(config.secondChance).toEqual({ enabled: false, retainSeconds: 900 });
    expect(ok(base({}, { secondChance: { retainSeconds: 60 } })).config.secondChance).toEqual({
      enabled: true,
      retainSeconds: 60,
    });
  });

  test.each([
    [
      'vips[0].backends[0].encap: "fou" is not one of ipip, gue',
      base({ backends: [{ address: '10.1.0.1', encap: 'fou' }] }),
    ],
    [
      'vips[0].backends[0].encap: 4 is not one of ipip, gue',
      base({ backends: [{ address: '10.1.0.1', encap: 4 }] }),
    ],
    ['vips[0].encap: "GUE" is not one of ipip, gue', base({ encap: 'GUE' })],
    ['vips[0].stateless: "yes" is not "auto", true or false', base({ stateless: 'yes' })],
    ['vips[0].stateless: "true" is not "auto", true or false', base({ stateless: 'true' })],
    ['encap.guePort: 0 is below the minimum 1', base({}, { encap: { guePort: 0 } })],
    ['encap.guePort: 65536 is above the maximum 65535', base({}, { encap: { guePort: 65536 } })],
    ['encap.port: is not a known key', base({}, { encap: { port: 6080 } })],
    [
      'secondChance.retainSeconds: 0 is below the minimum 1',
      base({}, { secondChance: { retainSeconds: 0 } }),
    ],
    ['secondChance.retainSeconds: 1.5 is not an integer', base({}, { secondChance: { retainSeconds: 1.5 } })],
    ['secondChance.enabled: "yes" is not a boolean', base({}, { secondChance: { enabled: 'yes' } })],
  ])('refused whole: %s', (message, input) => {
    const errs = errors(input);
    expect(errs.some((e) => e.startsWith(message))).toBe(true);
  });

  test('a number for stateless is refused, naming the field', () => {
    expect(errors(base({ stateless: 1 })).join('\n')).toMatch(/^vips\[0\]\.stateless: 1 /m);
  });

  test('stateless forced over ipip backends: accepted with a warning naming them', () => {
    const r = ok(base({ stateless: true }));
    expect(r.warnings).toEqual([
      expect.objectContaining({
        path: 'vips[0].stateless',
        message: expect.stringContaining('1 backend(s) use ipip (backends[0])'),
      }),
    ]);
    expect(ok(base({ stateless: true, encap: 'gue' })).warnings).toEqual([]);
  });
});
