"""gluondet launch: run a command as dist_sync workers with MXNet parameter servers."""
import sys

import click

from ..constants import LAUNCHERS
from ..errors import GluondetError
from ..ranges import check_ranges
from .options import deprecated


def _parse_env(pairs):
    env = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise GluondetError(f"--env: '{pair}' is not NAME=VALUE")
        env[key] = value
    return env


@click.command(name="launch", context_settings={"ignore_unknown_options": True})
@click.option("-n", "--workers", "num_workers", type=int, default=None,
              help="Distributed worker processes (each trains on its shard of the training set). "
                   "Not --num-workers, which in train and eval means DataLoader processes.")
@click.option("--num-workers", "old_num_workers", type=int, default=None, hidden=True)
@click.option("-s", "--servers", "num_servers", type=int, default=None,
              help="Parameter-server processes [default: as many as workers].")
@click.option("--num-servers", "old_num_servers", type=int, default=None, hidden=True)
@click.option("--launcher", type=click.Choice(LAUNCHERS), default="local", show_default=True,
              help="local: every process on this machine, on 127.0.0.1 only. "
                   "ssh: servers and workers on the hosts of -H, the scheduler here.")
@click.option("-H", "--hostfile", type=click.Path(dir_okay=False),
              help="For --launcher ssh: one host (or host:sshport) a line.")
@click.option("--scheduler-host", metavar="ADDR",
              help="For --launcher ssh: this machine's address as the hosts reach it "
                   "[default: the address on the route to the first host].")
@click.option("--env", "env_pairs", multiple=True, metavar="NAME=VALUE",
              help="Set an environment variable in every process (repeatable).")
@click.option("--timeout", type=float, default=None, metavar="SECONDS",
              help="Stop the whole job after this long (exit status 124).")
@click.option("--watchdog-timeout", type=float, default=None, metavar="SECONDS",
              help="Stop the job, naming the rank, when a gluondet train worker stops answering (or "
                   "is stuck while the others wait) this long [300].")
@click.argument("command", nargs=-1, type=click.UNPROCESSED, required=True)
def launch(num_workers, old_num_workers, num_servers, old_num_servers, launcher, hostfile, scheduler_host,
           env_pairs, timeout, watchdog_timeout, command):
    """Run COMMAND as distributed workers, e.g. to train on two machines' worth of processes:

    \b
      gluondet launch -n 2 -s 1 -- gluondet train --dataset helmet_voc --kvstore dist_sync
      gluondet launch -n 2 -s 2 --launcher ssh -H hosts.txt -- gluondet train ... --kvstore dist_sync

    Output lines carry the process name ([worker 0], [server 0], [scheduler]). The exit status is
    the first failing process's (the others are stopped), 2 when the watchdog names a worker that
    stopped answering; Ctrl-C stops every process. For Horovod, use horovodrun (README: Horovod).
    """
    from ..engine.distributed import launch as run_launch

    if old_num_workers is not None:
        deprecated("launch --num-workers", "-n/--workers (--num-workers means DataLoader processes elsewhere)")
        num_workers = num_workers or old_num_workers
    if old_num_servers is not None:
        deprecated("launch --num-servers", "-s/--servers")
        num_servers = num_servers or old_num_servers
    if num_workers is None:
        raise GluondetError("launch needs -n/--workers N, the number of worker processes")
    check_ranges({"launch.workers": num_workers, "launch.servers": num_servers, "launch.timeout": timeout,
                  "launch.watchdog_timeout": watchdog_timeout})

    status = run_launch(list(command), num_workers, num_servers, launcher=launcher, hostfile=hostfile,
                        scheduler_host=scheduler_host, extra_env=_parse_env(env_pairs), timeout=timeout,
                        watchdog_timeout=watchdog_timeout)
    sys.exit(status)
