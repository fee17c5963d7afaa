import { defineConfig } from "vite";

// The API serves dist/ at `/`; during development `npm run dev` proxies a local API (`prl up`).
export default defineConfig({
  build: { outDir: "dist", emptyOutDir: true, sourcemap: true },
  server: { proxy: { "/api": "http://127.0.0.1:8080" } },
});
