import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    globalSetup: ["test/global-setup.ts"],
    testTimeout: 30_000,
    hookTimeout: 60_000,
    // Integration tests bind real sockets; run files in parallel forks but keep each file serial.
    pool: "forks",
    fileParallelism: true,
  },
});
