"""Emulated AWS speed, side by side in one run: put_item+get_item pairs per second through dbdrill's endpoint
and a region's fault proxy vs moto's own ThreadedMotoServer (pristine: measured while dbdrill's stack is
stopped, in the same process, with the same boto3 client code), and how long the stack takes to serve every
region. Run: python bench/bench_aws.py [--ops N] [--rounds R]"""
from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import time
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

REGIONS = ("us-east-1", "us-west-2", "eu-west-1")


def make_client(endpoint_url: str, region: str = "us-east-1") -> Any:
    import boto3
    from botocore.config import Config

    session = boto3.session.Session(aws_access_key_id="testing", aws_secret_access_key="testing",
                                    region_name=region)
    return session.client("dynamodb", endpoint_url=endpoint_url, config=Config(retries={"total_max_attempts": 1}))


def pairs_per_second(client: Any, table: str, ops: int) -> float:
    """The client code under test: one put_item and one get_item per pair."""
    client.create_table(TableName=table, KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
                        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
                        BillingMode="PAY_PER_REQUEST")
    for i in range(20):  # warm connections and code paths
        client.put_item(TableName=table, Item={"pk": {"S": f"w{i}"}, "v": {"S": "x" * 100}})
    start = time.perf_counter()
    for i in range(ops):
        client.put_item(TableName=table, Item={"pk": {"S": f"k{i}"}, "v": {"S": "x" * 100}})
        client.get_item(TableName=table, Key={"pk": {"S": f"k{i}"}})
    return ops / (time.perf_counter() - start)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--ops", type=int, default=400, help="put+get pairs per round (default 400)")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds (default 5)")
    args = parser.parse_args()
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    os.environ.setdefault("AWS_ACCOUNT_ID_ENDPOINT_MODE", "disabled")

    t0 = time.perf_counter()
    from moto.moto_server.threaded_moto_server import ThreadedMotoServer

    from harness.config import Settings
    from harness.stack import Stack

    results: dict[str, list[float]] = {"dbdrill via region proxy": [], "dbdrill direct": [],
                                       "moto ThreadedMotoServer": []}
    starts: list[float] = []
    first_start = 0.0
    for r in range(args.rounds):
        s0 = time.perf_counter()
        stack = Stack(Settings(regions=REGIONS))
        aws = stack.aws
        starts.append(time.perf_counter() - s0)
        if r == 0:
            first_start = time.perf_counter() - t0
        try:
            results["dbdrill via region proxy"].append(
                pairs_per_second(make_client(aws.endpoint_url("us-east-1")), f"proxy{r}", args.ops))
            results["dbdrill direct"].append(pairs_per_second(make_client(aws.url), f"direct{r}", args.ops))
        finally:
            stack.close()
        moto_server = ThreadedMotoServer("127.0.0.1", 0, verbose=False)
        moto_server.start()
        try:
            host, port = moto_server.get_host_and_port()
            results["moto ThreadedMotoServer"].append(
                pairs_per_second(make_client(f"http://{host}:{port}"), f"moto{r}", args.ops))
        finally:
            moto_server.stop()

    med = {k: statistics.median(v) for k, v in results.items()}
    print(f"put_item+get_item pairs/s (median of {args.rounds} alternating rounds x {args.ops} pairs, one client):")
    for name, value in med.items():
        print(f"  {name:28s} {value:8.1f} pairs/s  ({1000 / value / 2:.2f} ms per request)")
    ratio = med["dbdrill via region proxy"] / med["moto ThreadedMotoServer"]
    print(f"  ratio dbdrill (proxied) / ThreadedMotoServer: {ratio:.2f}x  (target >= 2x: "
          f"{'met' if ratio >= 2 else 'NOT met'})")
    warm = statistics.median(starts[1:] or starts)
    print(f"stack start, {len(REGIONS)} regions behind proxies: {first_start * 1000:.0f} ms first (imports "
          f"included), {warm * 1000:.0f} ms median restart  (target <= 1000 ms: "
          f"{'met' if first_start <= 1 else 'NOT met'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
