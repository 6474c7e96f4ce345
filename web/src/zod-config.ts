/**
 * Imported first by main.ts: zod's JIT probes `new Function` on its first parse, which the page's CSP
 * (no 'unsafe-eval') refuses and reports as a violation. Parsing without the JIT needs no eval at all.
 */
import { z } from "zod";

z.config({ jitless: true });
