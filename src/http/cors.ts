import type { ServerResponse } from "node:http";

// client-server API §Web Browser Clients: every response carries these, and OPTIONS
// preflights get them with an empty 200/204 body.
export const corsHeaders: Readonly<Record<string, string>> = {
  "access-control-allow-origin": "*",
  "access-control-allow-methods": "GET, POST, PUT, DELETE, OPTIONS",
  "access-control-allow-headers": "X-Requested-With, Content-Type, Authorization",
};

export function sendPreflight(res: ServerResponse): void {
  res.writeHead(204, { ...corsHeaders, "content-length": "0" });
  res.end();
}
