// Address pool for Services without an explicit VIP: the model's (src/model/pool.ts), which the kubernetes section checks.
export * from '../../model/pool';
