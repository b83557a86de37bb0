#!/bin/sh
# nvidia-smi as simulated by cdi-harness (its `sim` backend); this is not NVIDIA software.
#
# Like the real nvidia-smi inside a container, it reports the GPUs whose device nodes the
# container runtime injected (through CDI): every /dev/nvidiaN present is looked up by its
# minor number N in the inventory that the simulated CDI spec mounts (the stand-in for the
# driver library), and the visible GPUs are numbered from 0 in minor order.
# Without the inventory it fails as nvidia-smi does without libnvidia-ml.so (exit 12),
# without /dev/nvidiactl as it does without a driver (exit 9), and with no GPU node as it
# does when no device is visible (exit 6).
# NVIDIA_SIM_DEV_DIR and NVIDIA_SIM_INVENTORY only exist for the harness's own tests.
# Written for busybox sh: POSIX sh plus printf, no arrays.
dev=${NVIDIA_SIM_DEV_DIR:-/dev}
inv=${NVIDIA_SIM_INVENTORY:-@INVENTORY@}
driver=@DRIVER@
nvml=@NVML@
cuda=@CUDA@
tab='	'

no_nvml() {
	echo "NVIDIA-SMI couldn't find libnvidia-ml.so library in your system. Please make sure that the NVIDIA Display Driver is properly installed and present in your system."
	echo "Please also try adding directory that contains libnvidia-ml.so to your system PATH."
	echo
	exit 12
}

no_driver() {
	echo "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. Make sure that the latest NVIDIA driver is installed and running."
	echo
	exit 9
}

bad_args() {
	echo "Invalid combination of input arguments. Please run 'nvidia-smi -h' for help."
	echo
	exit 2
}

usage() {
	echo "NVIDIA System Management Interface -- v$driver (simulated by cdi-harness)"
	echo
	echo "Supported here: nvidia-smi [-L | --list-gpus] [--query-gpu=FIELDS --format=csv[,noheader][,nounits]] [--version] [-h]"
	echo "Query fields: index, uuid, name, pci.bus_id, driver_version, count, memory.total"
}

# each_gpu FUNC: calls FUNC VISIBLE_INDEX MINOR UUID NAME BUS_ID MEMORY_MIB for every
# inventory GPU whose /dev/nvidiaMINOR node exists, in minor order (the inventory is sorted).
each_gpu() {
	_n=0
	while IFS=$tab read -r _minor _uuid _name _bus _mem; do
		case $_minor in '' | '#'*) continue ;; esac
		[ -e "$dev/nvidia$_minor" ] || continue
		"$1" "$_n" "$_minor" "$_uuid" "$_name" "$_bus" "$_mem"
		_n=$((_n + 1))
	done <"$inv"
}

count=0
count_gpu() { count=$((count + 1)); }

list_gpu() { printf 'GPU %d: %s (UUID: %s)\n' "$1" "$4" "$3"; }

table_gpu() {
	_nm=$4
	if [ ${#_nm} -gt 29 ]; then _nm="$(printf '%.26s' "$_nm")..."; fi
	printf '| %3d  %-29s  On  | %18s Off | %20s |\n' "$1" "$_nm" "$5" 0
	printf '| N/A   %2dC    P0            %3dW /  %3dW | %10s / %9s | %7s      Default |\n' \
		$((30 + $2 % 7)) 69 700 0MiB "${6}MiB" "0%"
	printf '| %39s | %22s | %20s |\n' '' '' Disabled
	echo "$sep"
}

query_gpu() {
	_line=
	_sep=
	for _f in $fields; do
		case $_f in
		index) _v=$1 ;;
		uuid | gpu_uuid) _v=$3 ;;
		name | gpu_name) _v=$4 ;;
		pci.bus_id | gpu_bus_id) _v=$5 ;;
		driver_version) _v=$driver ;;
		count) _v=$count ;;
		memory.total) if [ -n "$nounits" ]; then _v=$6; else _v="$6 MiB"; fi ;;
		esac
		_line="$_line$_sep$_v"
		_sep=', '
	done
	echo "$_line"
}

mode=table
query=
format=
while [ $# -gt 0 ]; do
	case $1 in
	-L | --list-gpus) mode=list ;;
	--query-gpu=*) mode=query query=${1#--query-gpu=} ;;
	--query-gpu) [ $# -ge 2 ] || bad_args; shift; mode=query query=$1 ;;
	--format=*) format=${1#--format=} ;;
	--format) [ $# -ge 2 ] || bad_args; shift; format=$1 ;;
	-h | --help) mode=help ;;
	--version) mode=version ;;
	*) bad_args ;;
	esac
	shift
done

if [ "$mode" = help ]; then
	usage
	exit 0
fi

[ -r "$inv" ] || no_nvml
[ -e "$dev/nvidiactl" ] || no_driver

if [ "$mode" = version ]; then
	printf 'NVIDIA-SMI version  : %s\nNVML version        : %s\nDRIVER version      : %s\nCUDA Version        : %s\n' \
		"$driver" "$nvml" "$driver" "$cuda"
	exit 0
fi

each_gpu count_gpu
if [ "$count" -eq 0 ]; then
	echo "No devices were found"
	exit 6
fi

dash=+-----------------------------------------------------------------------------------------+
sep=+-----------------------------------------+------------------------+----------------------+

case $mode in
list)
	each_gpu list_gpu
	;;
query)
	[ -n "$query" ] || bad_args
	header=yes
	nounits=
	csv=
	_old=$IFS
	IFS=,
	set -- $format
	IFS=$_old
	for _o in "$@"; do
		case $_o in
		csv) csv=yes ;;
		noheader) header= ;;
		nounits) nounits=yes ;;
		*) bad_args ;;
		esac
	done
	[ -n "$csv" ] || bad_args
	IFS=,
	set -- $query
	IFS=$_old
	fields="$*"
	_head=
	_hsep=
	for _f in $fields; do
		case $_f in
		index | uuid | gpu_uuid | name | gpu_name | pci.bus_id | gpu_bus_id | driver_version | count) _h=$_f ;;
		memory.total) _h='memory.total [MiB]' ;;
		*)
			echo "Field \"$_f\" is not a valid field to query."
			echo
			exit 2
			;;
		esac
		_head="$_head$_hsep$_h"
		_hsep=', '
	done
	[ -z "$header" ] || echo "$_head"
	each_gpu query_gpu
	;;
table)
	if command -v date >/dev/null 2>&1; then
		printf '%s       \n' "$(date '+%a %b %e %H:%M:%S %Y')"
	fi
	echo "$dash"
	printf '| %-34s%-31s%-23s|\n' "NVIDIA-SMI $driver" "Driver Version: $driver" "CUDA Version: $cuda"
	echo "$sep"
	echo '| GPU  Name                 Persistence-M | Bus-Id          Disp.A | Volatile Uncorr. ECC |'
	echo '| Fan  Temp   Perf          Pwr:Usage/Cap |           Memory-Usage | GPU-Util  Compute M. |'
	echo '|                                         |                        |               MIG M. |'
	echo '|=========================================+========================+======================|'
	each_gpu table_gpu
	printf '%89s\n' ''
	echo "$dash"
	printf '| %-87s |\n' 'Processes:'
	printf '| %-87s |\n' ' GPU   GI   CI              PID   Type   Process name                        GPU Memory'
	printf '| %-87s |\n' '       ID   ID                                                               Usage'
	echo '|=========================================================================================|'
	printf '| %-87s |\n' ' No running processes found'
	echo "$dash"
	;;
esac
exit 0
