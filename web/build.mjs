// Bundles the demo app (and the SDK as a standalone ES module) into dist/.
// Usage: node build.mjs [--watch] [--no-minify]
import { build, context } from 'esbuild';
import { copyFile, mkdir, rm } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = dirname(fileURLToPath(import.meta.url));
const outdir = join(root, 'dist');
const watch = process.argv.includes('--watch');
const minify = !process.argv.includes('--no-minify') && !watch;

const common = {
  bundle: true,
  format: 'esm',
  platform: 'browser',
  target: 'es2020',
  sourcemap: true,
  minify,
  legalComments: 'linked',
  logLevel: 'info',
};

const builds = [
  // The demo: dist/app.js + dist/app.css (the CSS imported by main.ts).
  { ...common, entryPoints: { app: join(root, 'src/demo/main.ts') }, outdir },
  // The SDK alone, for pages that bring their own UI.
  { ...common, entryPoints: { 'mikoto-rtc': join(root, 'src/sdk/index.ts') }, outdir },
];

await rm(outdir, { recursive: true, force: true });
await mkdir(outdir, { recursive: true });
await copyFile(join(root, 'src/demo/index.html'), join(outdir, 'index.html'));

if (watch) {
  for (const options of builds) await (await context(options)).watch();
  console.log('watching src/ (index.html is copied once)');
} else {
  await Promise.all(builds.map((options) => build(options)));
}
