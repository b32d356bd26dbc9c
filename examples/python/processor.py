"""A Python processor under the Kappa processor contract v1 (confluent-kafka).

Per-key count, sum and maximum of a numeric JSON field: the view the
reference processor writes, so `kappa-processor check` verifies this one too.
Exactly once: each batch's view updates and its input offsets are committed in
one Kafka transaction, and a pod (re)assigned partitions rebuilds its state
from the view, which holds exactly what the committed offsets cover.

    python processor.py [--logic sum|count|max] [--field amount] [--health-port 8081]

/healthz answers 200 while the loop runs; /readyz once partitions are assigned.
"""

import argparse
import json
import os
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition


def env(name):
    value = os.environ.get(name, "")
    if not value:
        sys.exit(f"{name} is not set: run this under the Kappa processor contract (see docs/contract.md)")
    return value


def client_config():
    """librdkafka settings from the contract's variables (PEM text, not paths)."""
    conf = {"bootstrap.servers": env("KAPPA_BOOTSTRAP_SERVERS"), "security.protocol": os.environ.get("KAPPA_SECURITY_PROTOCOL", "PLAINTEXT")}
    optional = {
        "sasl.mechanism": "KAPPA_SASL_MECHANISM",
        "sasl.username": "KAPPA_SASL_USERNAME",
        "sasl.password": "KAPPA_SASL_PASSWORD",
        "ssl.ca.pem": "KAPPA_SSL_CA_PEM",
        "ssl.certificate.pem": "KAPPA_SSL_CERTIFICATE_PEM",
        "ssl.key.pem": "KAPPA_SSL_KEY_PEM",
    }
    conf.update({key: os.environ[var] for key, var in optional.items() if os.environ.get(var)})
    return conf


def parse(key, value, field):
    """(key, amount) of an event, or None for one that is not a JSON object with an integer field."""
    try:
        event = json.loads(value) if value else None
    except ValueError:
        return None
    if not isinstance(event, dict):
        return None
    amount = event.get(field)
    if not isinstance(amount, int) or isinstance(amount, bool):
        return None
    key = key.decode() if key else event.get("key")
    return (key, amount) if isinstance(key, str) and key else None


def render(agg, logic, version):
    count, total, top = agg
    out = {"count": count}
    if logic == "sum":
        out["sum"] = total
    if logic == "max" and top is not None:
        out["max"] = top
    out.update({"logic": logic, "version": version, "state": [count, total, top]})
    return json.dumps(out, separators=(",", ":"))


def restore(conf, view):
    """The whole view as committed: key -> (count, sum, max). Read to each
    partition's end, or until nothing more comes (transaction markers)."""
    reader = Consumer({**conf, "group.id": f"{env('KAPPA_CONSUMER_GROUP')}-restore", "enable.auto.commit": False,
                       "isolation.level": "read_committed", "auto.offset.reset": "earliest"})
    meta = reader.list_topics(view, timeout=30).topics[view]
    ends = {p: reader.get_watermark_offsets(TopicPartition(view, p), timeout=30)[1] for p in meta.partitions}
    pending = {p for p, end in ends.items() if end > 0}
    reader.assign([TopicPartition(view, p, 0) for p in ends])
    state, quiet_since = {}, time.monotonic()
    while pending and time.monotonic() - quiet_since < 3:
        msg = reader.poll(0.5)
        if msg is None:
            continue
        if msg.error():
            raise KafkaException(msg.error())
        quiet_since = time.monotonic()
        if msg.key() and msg.value():
            state[msg.key().decode()] = tuple(json.loads(msg.value())["state"])
        if msg.offset() + 1 >= ends[msg.partition()]:
            pending.discard(msg.partition())
    reader.close()
    return state


def commit(producer):
    """Commits the open transaction, retrying while Kafka says it may."""
    while True:
        try:
            producer.commit_transaction(60)
            return
        except KafkaException as e:
            if not e.args[0].retriable():
                raise
            time.sleep(0.5)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--logic", choices=["sum", "count", "max"], default="sum")
    ap.add_argument("--field", default="amount")
    ap.add_argument("--health-port", type=int, default=8081)
    args = ap.parse_args()

    group, view, version = env("KAPPA_CONSUMER_GROUP"), env("KAPPA_OUTPUT_TOPIC"), env("KAPPA_VIEW_VERSION")
    instance = os.environ.get("KAPPA_INSTANCE_ID") or "local"
    conf = client_config()
    status = {"alive": True, "ready": False}
    state = {}

    def on_assign(consumer, partitions):
        # The view holds exactly what the committed offsets cover, and
        # consumption resumes from them: rebuild the state from the view.
        state.clear()
        state.update(restore(conf, view))
        status["ready"] = True

    consumer = Consumer({**conf, "group.id": group, "group.instance.id": instance, "auto.offset.reset": "earliest",
                         "enable.auto.commit": False, "isolation.level": "read_committed"})
    producer = Producer({**conf, "transactional.id": f"{group}-{instance}", "linger.ms": 20})
    producer.init_transactions(60)
    consumer.subscribe(env("KAPPA_INPUT_TOPICS").split(","), on_assign=on_assign)

    class Health(BaseHTTPRequestHandler):
        def do_GET(self):
            ok = {"/healthz": status["alive"], "/readyz": status["ready"]}.get(self.path)
            self.send_response(200 if ok else 503)
            self.end_headers()

        def log_message(self, *_):
            pass

    server = ThreadingHTTPServer((os.environ.get("POD_IP") or "0.0.0.0", args.health_port), Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())

    while not stop.is_set():
        msgs = consumer.consume(num_messages=5000, timeout=0.5)
        dirty = set()
        for msg in msgs:
            if msg.error():
                continue
            parsed = parse(msg.key(), msg.value(), args.field)
            if parsed is None:
                continue
            key, amount = parsed
            count, total, top = state.get(key, (0, 0, None))
            state[key] = (count + 1, total + amount, amount if top is None else max(top, amount))
            dirty.add(key)
        if not msgs:
            continue
        try:
            producer.begin_transaction()
            for key in dirty:
                producer.produce(view, key=key, value=render(state[key], args.logic, version))
            positions = consumer.position(consumer.assignment())
            producer.send_offsets_to_transaction(positions, consumer.consumer_group_metadata(), 60)
            commit(producer)
        except KafkaException as e:
            # State and position are ahead of what Kafka has: start again
            # from the view and the committed offsets.
            print(f"transaction failed, restarting: {e}", file=sys.stderr)
            producer.abort_transaction(60)
            sys.exit(1)
    status["alive"] = False
    consumer.close()


if __name__ == "__main__":
    main()
