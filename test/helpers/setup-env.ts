// Jest setup for every test file: quiet logs unless asked for.
process.env.PEAK_XDP_LOG_LEVEL ??= 'silent';
