// The bundler (esbuild) emits imported stylesheets as a .css file next to the script.
declare module "*.css";
