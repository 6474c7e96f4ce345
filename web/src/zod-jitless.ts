/**
 * zod checks whether eval (new Function) works when an object schema is built, and the page's CSP refuses
 * eval and reports the probe as a violation. Jitless parsing never probes. This module is main.ts's first
 * import, so that it runs before any module builds a schema.
 */
import { config } from "zod";

config({ jitless: true });
