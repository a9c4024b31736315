// Plugs the BGP section's schema into config validation, so a bad `bgp` rejects the whole file.
import { bgpConfigSchema } from '../bgp/config';
import { fromZodIssues } from '../model/errors';
import { setBgpValidator } from '../model/config';

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
}
