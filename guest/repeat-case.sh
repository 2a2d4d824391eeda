#!/bin/sh
# Run one khugepaged selftest invocation N times in the guest and count the
# failures: how an intermittent case is measured (the arm64 swap-in case was).
#
#   cargo harness run --arch arm64 --impl c --file guest/repeat-case.sh \
#       -- 'sh repeat-case.sh 30 khugepaged:anon'
#
# It runs from /khrs after the cases, under the implementation the last block
# left switched on. Each failing run's output is printed whole; every run's
# "swap" line says how the max_ptes_swap case went. Exits 1 if any run failed,
# 2 on bad arguments.
n=$1
shift
case "$n" in
'' | *[!0-9]*)
	echo "usage: repeat-case.sh N [khugepaged arguments...]" >&2
	exit 2
	;;
esac
[ $# -gt 0 ] || set -- khugepaged:anon
if ! [ -x ./khugepaged ]; then
	echo "repeat-case.sh: no ./khugepaged in $(pwd) (run with the khugepaged cases)" >&2
	exit 2
fi
failed=0
i=1
while [ "$i" -le "$n" ]; do
	./khugepaged "$@" >/tmp/repeat.out 2>&1
	rc=$?
	swap=$(grep -m1 'max_ptes_swap pages swapped out' /tmp/repeat.out)
	echo "REPEAT $i/$n rc=$rc ${swap:-(no swap line)}"
	if [ "$rc" -ne 0 ]; then
		failed=$((failed + 1))
		cat /tmp/repeat.out
	fi
	i=$((i + 1))
done
echo "REPEAT failed $failed of $n: khugepaged $*"
[ "$failed" -eq 0 ]
