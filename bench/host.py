"""The machine a standalone bench script runs on: what it is, its load average, and the CPU other processes took."""
import os, time


def description():
    """One line: CPUs, kernel, load average now."""
    return f"machine: nproc {os.cpu_count()}, Linux {os.uname().release}; {load_average('start')}"


def load_average(when):
    return f"load average ({when}): {' '.join(open('/proc/loadavg').read().split()[:3])}"


def _busy_ticks():
    fields = [int(x) for x in open("/proc/stat").readline().split()[1:]]
    return sum(fields) - fields[3] - fields[4]  # all but idle and iowait


def _ticks_of(pids):
    total = 0
    for pid in pids:
        try:
            fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
        except OSError:
            pass  # it has exited; what it used before is lost, so "others" is over-counted, never under
    return total


def _own_ticks():
    t = os.times()
    return (t.user + t.system) * os.sysconf("SC_CLK_TCK")


class OtherCpu:
    """CPU used by processes other than this one and `pids`, since it was made."""

    def __init__(self, pids):
        self.pids = pids
        self.busy, self.ours, self.at = _busy_ticks(), _ticks_of(pids) + _own_ticks(), time.perf_counter()

    def percent(self):
        """Percent of one CPU (100 = one core) since the start."""
        others = (_busy_ticks() - self.busy) - (_ticks_of(self.pids) + _own_ticks() - self.ours)
        return 100 * others / os.sysconf("SC_CLK_TCK") / (time.perf_counter() - self.at)

    @staticmethod
    def line(percent):
        return f"CPU used by other processes: {max(0.0, percent):.0f}% of {100 * os.cpu_count()}%"
