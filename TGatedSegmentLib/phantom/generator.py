"""Synthetic abdominal CT phantoms: the project's embedded default data.

:func:`generate_phantom` draws one abdomen-like CT volume in Hounsfield units with its label map in
a fraction of a second, with numpy only (SimpleITK for writing). It is what ``tgated demo`` trains
a tiny model on, and what the ablation benchmarks use to compare the slice-wise baseline with the
T-Gated temporal model.

Canonical frame
    Arrays are numpy ``(z, y, x)`` exactly as ``SimpleITK.GetArrayFromImage`` returns them for an
    image with identity direction (SimpleITK physical space is LPS): ``x`` grows toward the
    patient's LEFT, ``y`` toward POSTERIOR, ``z`` toward SUPERIOR. The liver is therefore at small
    ``x``, the left kidney at large ``x`` and the spine at large ``y``.

Content
    Air outside a body outline (an ellipse whose size varies smoothly with ``z``) with
    subcutaneous fat, a muscle wall (thicker at the back) and lower ribs; visceral fat and bowel
    loops inside; lung bases at the top; a spine (vertebral bodies with discs, canal, posterior
    elements) with paraspinal and psoas muscles; and the labelled organs of :data:`ORGAN_TABLE`.
    Every volume has its own body size, organ positions, sizes, axial extents and HU offsets;
    CT-like noise (in-plane correlated Gaussian) is added at the end.

Target organ and distractors (the adapter's raison d'etre)
    The target is the **gallbladder** (:data:`TARGET_ORGAN`). It is the abdomen13 organ that is a
    compact, smooth, homogeneous blob with a HU level of its own (bile, ~10 HU) and a clear axial
    extent (``spec.target_slices``: 8-13 slices at 5 mm), so "the same blob in one slice" is well
    defined; the pancreas is lobulated and elongated and its look depends on the slice. It hangs in
    the liver's fossa: its top 2-9 slices above the liver's lowest slice, the fundus below the liver.

    Each volume also gets up to ``spec.n_distractors`` distractor blobs, as many as fit beside the
    target (3-8 of the default 8 at the default target size; think hepatic cysts or
    fluid-filled bowel). A distractor is a 1-2 slice *section* of a virtual gallbladder drawn from
    the very same distributions (axial extent and height relative to the liver, in-plane position,
    radii, orientation, tilt, boundary wobble), cut at a uniformly random height inside it, and
    painted with the volume's own gallbladder HU, texture and noise. One slice of a distractor thus
    has the distribution of one slice of the gallbladder, up to the placement rules that follow
    (the tests check HU, texture and area). Rules: at least half of the distractors lie in slices without
    gallbladder; none touches the gallbladder, another organ or another distractor (2-voxel gap
    in-plane, also against the slices above and below, so every distractor is its own 26-connected
    component); they may sit inside the liver (an unlabelled hole, like a cyst); they are never
    labelled. When no room is found (rare: 1 volume in 60 with the defaults) fewer are drawn;
    :attr:`Phantom.distractors` lists those drawn. A slice-wise model cannot separate them from the
    gallbladder; a model that sees 5 slices can, because a gallbladder section has gallbladder
    above or below it and a distractor has nothing.
"""

# The generator's parts live in their own modules; its names stay importable from here.
from .blobs import blob_extents as blob_extents
from .dataset import case_name as case_name
from .dataset import time_generation as time_generation
from .dataset import write_phantom_dataset as write_phantom_dataset
from .spec import Distractor as Distractor
from .spec import Phantom as Phantom
from .spec import PhantomSpec as PhantomSpec
from .tissues import LABEL_IDS as LABEL_IDS
from .tissues import ORGAN_TABLE as ORGAN_TABLE
from .tissues import TARGET_ORGAN as TARGET_ORGAN
from .tissues import TISSUE_HU as TISSUE_HU
from .volume import generate_phantom as generate_phantom
