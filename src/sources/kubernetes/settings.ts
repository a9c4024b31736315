// The `kubernetes:` section of the daemon config: its schema is the model's (src/model/kubernetes.ts).
export { parseKubernetesSettings } from '../../model/kubernetes';
export type { KubernetesSettings } from '../../model/kubernetes';
