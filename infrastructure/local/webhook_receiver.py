"""A webhook receiver for development: verifies each delivery and prints it.

    python -m infrastructure.local.webhook_receiver --port 8099 --subscription SUB.json [--count N]

`SUB.json` is the answer of `POST /webhooks` (its `secret` signs the deliveries). Each
delivery is verified with the `standardwebhooks` library, as a subscriber's code would,
answered 204 and printed on one line; a delivery whose signature does not verify gets 400
(and is retried by the stack). With `--count N` it stops after N verified deliveries.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from infrastructure.ops import render


def line(message_id: str, message: dict[str, Any]) -> str:
    return f"verified {message_id}: {render.domain_event_summary(message['data'])}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infrastructure.local.webhook_receiver")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--subscription", type=Path, required=True, help="the answer of POST /webhooks")
    parser.add_argument("--count", type=int, help="stop after this many verified deliveries")
    args = parser.parse_args(argv)
    verifier = Webhook(json.loads(args.subscription.read_text(encoding="utf-8"))["secret"])
    done = threading.Event()
    received: list[str] = []
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            headers = {k.lower(): v for k, v in self.headers.items()}
            try:
                message = verifier.verify(body, headers)
            except WebhookVerificationError:
                self.send_response(400)
                self.end_headers()
                return
            self.send_response(204)
            self.end_headers()
            with lock:
                if done.is_set() or headers["webhook-id"] in received:
                    return
                received.append(headers["webhook-id"])
                print(line(headers["webhook-id"], message), flush=True)
                if args.count is not None and len(received) >= args.count:
                    done.set()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        done.wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.shutdown()
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
