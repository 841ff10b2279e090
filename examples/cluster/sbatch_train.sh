#!/bin/bash
# zeroflow training on 2 nodes x 2 ranks under Slurm. From the repository root (where
# build/zeroflow is):
#   sbatch examples/cluster/sbatch_train.sh [train options ...]
#   sbatch examples/cluster/sbatch_train.sh --config examples/graphs/train.toml --set zero.stage=2
# Options on sbatch's command line override the #SBATCH lines (e.g. `sbatch -N 4 ...`).
# Each rank finds its rank, world size, local rank and rank 0's node from Slurm's variables
# (SLURM_PROCID, SLURM_STEP_NUM_TASKS, SLURM_LOCALID, the step's node list); the rendezvous port
# is derived from the job id. Only processes that srun starts are ranks: a `zeroflow train` run
# directly in this script would train alone.
#SBATCH --job-name=zeroflow-train
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=2
#SBATCH --time=01:00:00
# One rank per GPU on GPU nodes:   #SBATCH --gpus-per-task=1
# CPU threads per rank (used below as train.threads):   #SBATCH --cpus-per-task=8
set -euo pipefail

zeroflow=${ZEROFLOW:-build/zeroflow}  # relative to the folder sbatch was run from

# The job's secret: every rank presents it to the rendezvous, so that a stranger who reaches the
# port can neither join the job nor read its rank table. 32 random hex digits, in the environment
# that srun passes to the ranks (only the job's owner and root can read it there).
ZF_JOB_SECRET=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
export ZF_JOB_SECRET

# Optional. Rank 0's address: the step's first node by name; set it when node names do not
# resolve to an address the other nodes reach (e.g. the InfiniBand one).
#   export MASTER_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -1)-ib
# Optional. The rendezvous port (default 20000 + (SLURM_JOB_ID * 97 + SLURM_STEP_ID) % 40000).
#   export MASTER_PORT=29500
# Optional. The address this node's data plane (Gloo) binds (default: this host's name).
#   export ZF_IFACE_ADDR=...

threads=()
[[ -n ${SLURM_CPUS_PER_TASK:-} ]] && threads=(--set "train.threads=$SLURM_CPUS_PER_TASK")

# One task per rank; --kill-on-bad-exit: a rank that fails stops the others at once instead of
# leaving them waiting in a collective. Every rank gets the same --out (rank 0 writes metrics and
# the manifest, each rank its own checkpoint slices: a folder every node sees).
srun --kill-on-bad-exit=1 "$zeroflow" train --out "runs/$SLURM_JOB_ID" "${threads[@]}" "$@"
