#!/usr/bin/env bash
# Regenerates the digits figures and their summaries (docs/evaluation.md shows them): ROAR with the mean
# and ROAD fills over 3 seeds, KAR, mask leakage, pixel perturbation, cascading model randomisation
# (<name>.png and <name>.summary.md each), and the gallery of every method's maps (gallery_digits.png,
# docs/methods.md). Usage and FIGURES_WORK: scripts/figures/lib.sh.
source "$(dirname "$0")/lib.sh"

figure roar_digits_mean experiment=digits "seeds=[0,1,2]"
figure roar_digits_road experiment=digits "seeds=[0,1,2]" roar.fill=road
figure kar_digits experiment=digits roar.mode=kar
figure leakage_digits experiment=digits task=leakage
figure perturbation_digits experiment=digits task=perturbation "task.fractions=[0.03,0.1,0.2,0.3,0.5]"
figure randomization_digits experiment=digits task=randomization \
  "method=[fullgrad,input_gradient,integrated_gradients,smoothgrad,gradcam,random,sobel]"

"${roar[@]}" "hydra.run.dir=$work/gallery_digits" task=explain experiment=digits method=all explain.num_images=4
cp "$work/gallery_digits/gallery.png" "$out/gallery_digits.png"
