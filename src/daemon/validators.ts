// Plugs the bgp and kubernetes sections' schemas into config validation: a bad section rejects the whole file.
import { bgpConfigSchema } from '../bgp/config';
import { fromZodIssues } from '../model/errors';
import { setBgpValidator, setKubernetesValidator } from '../model/config';
import { parseKubernetesSettings } from '../sources/kubernetes/settings';

let installed = false;

export function installSectionValidators(): void {
  if (installed) return;
  installed = true;
  setBgpValidator((value) => {
    const r = bgpConfigSchema.safeParse(value);
    return r.success
      ? { ok: true, value: r.data }
      : { ok: false, issues: fromZodIssues(r.error.issues, value) };
  });
  // The daemon parses the section again when it starts the source: keep the file's value as written.
  setKubernetesValidator((value) => {
    const r = parseKubernetesSettings(value);
    return r.ok ? { ok: true, value } : { ok: false, issues: r.issues };
  });
}
