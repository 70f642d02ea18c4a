#!/usr/bin/env bash
# Probe for issue 24 on FSDD frames (not a committed result): the 2015-recipe ensemble and an augmented, longer
# (36-epoch) recipe; labels-only vs consistent students with the same augmentation and schedule. Run in an empty
# folder: bash run.sh DATA_DIR  (one torch thread per run; about 45 min of CPU on two cores).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"; data="${1:-../shared/data}"
dk() { OMP_NUM_THREADS=1 darkknowledge "$@" --data-dir "$data" --no-progress; }
dk ensemble --config "$here/member.yaml" --members 10 --out members
dk train --config "$here/labels.yaml" out_dir=labels
dk train --config "$here/labels.yaml" out_dir=labels_noaug name=labels_noaug "data.augment=[]"
dk distill --config "$here/cons.yaml" --teacher members/ensemble.json out_dir=cons
dk ensemble --config "$here/member_aug.yaml" --members 10 --workers 2 --out members_aug
dk distill --config "$here/cons_aug.yaml" --teacher members_aug/ensemble.json out_dir=cons_aug
dk distill --config "$here/hinton_aug.yaml" --teacher members_aug/ensemble.json out_dir=hinton_aug
