"""Summarise a callgrind profile written with --compress-strings=no: instructions per
request, and the functions with the most instructions of their own (self cost).

    python3 callgrind_top.py PROFILE REQUESTS [TOP]

Used by callgrind.sh. A cost line right after `calls=` is the inclusive cost of that
call, charged to the callee, so it is left out of the caller's self cost.
"""

import collections
import sys


def self_costs(path):
    costs = collections.Counter()
    function = None
    after_call = False
    with open(path, errors="replace") as profile:
        for line in profile:
            if line.startswith("fn="):
                function = line[3:].rstrip("\n")
            elif line.startswith("calls="):
                after_call = True
            elif line[:1].isdigit() or line[:1] in "+-*":
                fields = line.split()
                if len(fields) < 2:
                    continue
                if after_call:
                    after_call = False
                else:
                    costs[function] += int(fields[1])
    return costs


def main():
    path, requests = sys.argv[1], int(sys.argv[2])
    top = int(sys.argv[3]) if len(sys.argv) > 3 else 25
    costs = self_costs(path)
    total = sum(costs.values())
    print(f"instructions per request: {total // requests}")
    print()
    print(f"{'Ir/req':>8}  {'share':>6}  function (self cost)")
    for function, cost in costs.most_common(top):
        print(f"{cost // requests:8d}  {100 * cost / total:5.1f}%  {function[:150]}")


if __name__ == "__main__":
    main()
