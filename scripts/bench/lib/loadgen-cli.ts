// Entry point of the load generator inside a namespace: options as JSON in argv[2], result JSON on stdout,
// one `PROGRESS {...}` line per progress interval on stderr (and, with reportFailures, one `FAILURE {...}` line
// per failed request or broken connection).
import { FailureRecord, LoadOptions, runLoad } from './loadgen';

async function main(): Promise<void> {
  const arg = process.argv[2];
  if (!arg)
    throw new Error(
      'usage: loadgen-cli.js \'{"targets":[{"host":"10.0.0.1","port":80}],"mode":"open",...}\'',
    );
  const opts = JSON.parse(arg) as LoadOptions;
  const onFailure = opts.reportFailures
    ? (f: FailureRecord) => process.stderr.write(`FAILURE ${JSON.stringify(f)}\n`)
    : undefined;
  const r = await runLoad(opts, (p) => process.stderr.write(`PROGRESS ${JSON.stringify(p)}\n`), onFailure);
  process.stdout.write(JSON.stringify(r) + '\n');
}

main().then(
  () => process.exit(0),
  (e: unknown) => {
    process.stderr.write(`loadgen: ${e instanceof Error ? e.message : String(e)}\n`);
    process.exit(1);
  },
);
