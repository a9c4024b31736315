// Jest: TypeScript through ts-jest, transpile only (type checking is `tsc --noEmit` in `npm run lint`).
/** @type {import('jest').Config} */
module.exports = {
  // The node environment, plus a report of what keeps a worker alive when jest has to terminate it.
  testEnvironment: '<rootDir>/test/helpers/exit-environment.js',
  roots: ['<rootDir>/test'],
  testMatch: ['**/*.test.ts'],
  transform: { '^.+\\.ts$': ['ts-jest', { diagnostics: false }] },
  testTimeout: 60000,
  // Privileged files share the kernel; a few at a time keeps 2 cores responsive.
  maxWorkers: 2,
  reporters: ['default', '<rootDir>/test/helpers/summary-reporter.js'],
  setupFiles: ['<rootDir>/test/helpers/setup-env.ts'],
};
