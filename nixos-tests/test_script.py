# The test script of every cdi-harness scenario VM. make-test.nix prepends
#   data_file = "<store path of this test's JSON data>"
# The test driver provides `machine`.
import json
import shlex

with open(data_file) as f:
    data = json.load(f)

name: str = data["name"]
run_user: str = data["runUser"]
out_dir = "/tmp/cdi-harness"
generator = "nvidia-container-toolkit-cdi-generator.service"
runtime_dir = f"/run/user/{data['runUid']}"


def as_run_user(command: str, docker_host: bool = False) -> str:
    """`command` as the scenario's user. With rootless as the default, the harness
    finds the rootless socket from XDG_RUNTIME_DIR itself; the docker CLI is told."""
    if run_user == "root":
        return command
    env = ""
    if data["rootlessDefault"]:
        env = f"XDG_RUNTIME_DIR={runtime_dir} "
        if docker_host:
            env += f"DOCKER_HOST=unix://{runtime_dir}/docker.sock "
    return f"sudo -u {run_user} env {env}sh -c {shlex.quote(command)}"


machine.start()
machine.wait_for_unit("multi-user.target")

with subtest("the CDI generator ran as the scenario says"):
    spec = f"/run/cdi/{data['specFile']}"
    if data["generatorFails"]:
        machine.wait_until_succeeds(f"systemctl is-failed {generator}")
        machine.fail(f"test -e {spec}")
    else:
        machine.wait_for_unit(generator)
        machine.succeed(f"test -s {spec}")
    if data["staleSpec"]:
        machine.wait_for_unit("cdi-harness-stale-spec.service")
        machine.succeed(f"test -s /run/cdi/{data['staleSpec']}")
    print(machine.succeed("ls -la /run/cdi/ || true"))

with subtest("docker is up and has the test image"):
    if data["rootlessDefault"]:
        machine.succeed(f"loginctl enable-linger {run_user}")
        machine.wait_for_unit("docker.service", run_user)
        machine.wait_until_succeeds(as_run_user("docker info >/dev/null", docker_host=True))
        machine.succeed(as_run_user(f"docker load -i {data['imageTar']}", docker_host=True))
    else:
        # Socket-activated when the scenario has enableOnBoot = false.
        machine.wait_until_succeeds("docker info >/dev/null")
        machine.wait_for_unit("docker.service")
        machine.succeed(f"docker load -i {data['imageTar']}")

with subtest(f"cdi-harness run --backend host on scenario {name}"):
    machine.succeed(f"rm -rf {out_dir} && install -d -m 0777 {out_dir}")
    snapshots = f"{out_dir}/snapshots"
    if data["snapshotsPath"]:
        machine.succeed(f"cp -rL --no-preserve=mode {data['snapshotsPath']} {snapshots} && chmod -R a+rwX {snapshots}")
    else:
        machine.succeed(f"install -d -m 0777 {snapshots}")
    command = " ".join(
        [
            "cdi-harness run --backend host",
            f"--scenario {data['scenarioPath']}",
            f"--image {data['imageRef']}",
            f"--snapshots {snapshots}",
            f"--json {out_dir}/report.json",
            f"--junit {out_dir}/report.xml",
            f"--markdown {out_dir}/report.md",
        ]
    )
    rc, output = machine.execute(as_run_user(f"cd {out_dir} && {command} 2>&1"))
    print(output)

    for report_file in ["report.json", "report.xml", "report.md"]:
        if machine.execute(f"test -e {out_dir}/{report_file}")[0] == 0:
            machine.copy_from_vm(f"{out_dir}/{report_file}", "")
    new_snapshots = machine.execute(f"ls {snapshots}/host/*.snap.new 2>/dev/null")[1].split()
    for snap in new_snapshots:
        machine.copy_from_vm(snap, "snapshots")

    if rc not in (0, 1):
        raise Exception(f"cdi-harness exited {rc} (2 = usage or configuration error); output above")
    report = json.loads(machine.succeed(f"cat {out_dir}/report.json"))
    if report["simulated"]:
        raise Exception("the report is labelled simulated: the harness did not run on the host backend")
    # One judge: the harness's own `report judge` applies the scenario's declared failures
    # with the rules the sim backend uses. A first passthrough run without a stored
    # snapshot may record one (status `new`); otherwise a new snapshot is a problem (--ci).
    first_snapshot_ok = data["flavour"] == "passthrough" and not data["snapshotsPath"]
    judge = f"cdi-harness report judge {out_dir}/report.json --scenario {data['scenarioPath']}"
    if not first_snapshot_ok:
        judge += " --ci"
    judge_rc, verdict = machine.execute(f"{judge} 2>&1")
    print(verdict)
    if judge_rc != 0:
        raise Exception(f"scenario {name} on NixOS ({data['flavour']}): the harness's verdicts are not the scenario's:\n{verdict}")
    if rc == 1 and not data["expectedFailures"]:
        raise Exception("cdi-harness exited 1, but report judge found no failed check")
    print(f"scenario {name}: the harness's verdicts are the scenario's")
