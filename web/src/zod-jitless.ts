/**
 * zod compiles object parsers with `new Function` when it may; its probe for that is an eval, which the
 * page's Content-Security-Policy blocks and reports as a violation. The client parses without compiling.
 * Imported first by the entry, before any schema parses.
 */
import { config } from "zod";

config({ jitless: true });
