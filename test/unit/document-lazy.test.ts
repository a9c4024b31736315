// The yaml package is loaded only when a YAML document is parsed: a daemon with a JSON config never loads it.
describe('parseDocumentText', () => {
  it('loads yaml for the first YAML document, not for JSON ones', () => {
    jest.isolateModules(() => {
      let loads = 0;
      jest.doMock('yaml', () => {
        loads++;
        return jest.requireActual('yaml');
      });
      type DocumentModule = typeof import('../../src/model/document');
      // eslint-disable-next-line @typescript-eslint/no-require-imports -- a fresh module registry
      const mod = require('../../src/model/document') as DocumentModule;
      const { parseDocumentText } = mod;
      expect(parseDocumentText('{"a": [1, 2]}', 'json')).toEqual({ ok: true, value: { a: [1, 2] } });
      expect(loads).toBe(0);
      expect(parseDocumentText('a: [1, 2]\n', 'yaml')).toEqual({ ok: true, value: { a: [1, 2] } });
      expect(parseDocumentText('b: x\n', 'yaml')).toEqual({ ok: true, value: { b: 'x' } });
      expect(loads).toBe(1);
    });
  });
});
