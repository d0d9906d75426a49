// Bundles browser_entry.js (the real @fal-ai/client and the scenarios) for the page
// tests/test_fal_js.py opens in Chromium:  node build_page.mjs OUT_DIR
// esbuild's JS API, not its bin/esbuild: that file is a JS launcher or the native binary
// depending on whether npm ran esbuild's install script.
import { build } from "esbuild";

const [outdir] = process.argv.slice(2);
await build({
  entryPoints: [new URL("./browser_entry.js", import.meta.url).pathname],
  bundle: true,
  format: "iife",
  platform: "browser",
  outfile: `${outdir}/bundle.js`,
  logLevel: "warning",
});
