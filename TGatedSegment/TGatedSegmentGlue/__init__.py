"""Slicer-free part of the TGatedSegment module: every decision the panel and the logic make that does
not need Slicer, one module per concern, so that the pytest suite can check it without a running Slicer.

- :mod:`.prompts`: the prompt box's text as prompts, the presets;
- :mod:`.history`: the remembered recent prompts and recent models (Slicer's settings);
- :mod:`.models`: what the model box means, where a relative checkpoint path points, "no trained model",
  the model card area and its "How to get a model" link;
- :mod:`.modelstore`: the shared folder of imported models (``tgated models``): list, cards, import;
- :mod:`.naming`: segment names, the keep/replace rule;
- :mod:`.terminology`: colours and SNOMED CT terminology of new segments;
- :mod:`.options`: the run options (device, modality, threshold, batch size), checked before a run;
- :mod:`.devices`: the device list from what the backend process detected;
- :mod:`.dependencies`: the backend's Python packages, checked without importing them, and the install plan;
- :mod:`.commands`: the backend's command lines (``python -m TGatedSegmentLib segment|train|devices``) and environment;
- :mod:`.events`: the backend's JSON progress protocol, as percent and text;
- :mod:`.errors`: failed runs in plain words, with details;
- :mod:`.process` and :mod:`.processtree`: the backend process, read without blocking, stopped with every
  process it started;
- :mod:`.jobs`: a run as a job (start, poll, cancel, one ending), for segmentation, training, device detection
  and any other backend command (a model import);
- :mod:`.warm`: the warm backend (one model kept loaded between segmentations) and its job;
- :mod:`.handover`: the volume written with its exact geometry, the results read back on exactly that grid;
- :mod:`.roi`: the crop before inference (a region of interest, or the body) and the paste back;
- :mod:`.i18n`: user-visible text through Slicer's translation.

Heavy or optional packages (SimpleITK, slicerio, torch) are imported inside the functions that need
them, never at import time: Slicer loads this package with the module, before any dependency check.
It is a package (a folder), not files beside TGatedSegment.py, because Slicer loads every .py file
directly in a module folder as a module of its own. The names below are what the module and the
tests import from the package itself.
"""

# ruff: noqa: F401  (the names below are re-exported: the module and the tests import them from here)

from __future__ import annotations

from TGatedSegmentLib.compat import deprecated_names

from .commands import (
    BACKEND_PACKAGE,
    backendEnvironment,
    devicesArguments,
    segmentArguments,
    trainArguments,
    trainOptions,
)
from .dependencies import (
    IMPORT_NAMES,
    InstallError,
    InstallPlan,
    backendReport,
    installPlan,
    missingRequirements,
    readRequirements,
    requirementName,
    torchVersionRequirement,
)
from .devices import DeviceReport
from .errors import EXIT_CANCELLED, BackendError, Cancelled, errorFromBackend
from .events import SEGMENT_STAGES, ProgressTracker, describeInfo, parseEventLine, stageText
from .handover import (
    UNCERTAINTY_COLORS,
    UNCERTAINTY_FILE,
    UNCERTAINTY_MAX,
    UNCERTAINTY_SHOWN_FROM,
    exportVolume,
    readResult,
    readUncertainty,
)
from .history import (
    HISTORY_LIMIT,
    PROMPT_HISTORY_LIMIT,
    SETTINGS_GROUP,
    decodeHistory,
    encodeHistory,
    rememberCheckpoint,
    rememberEntry,
    rememberPrompts,
    settingsKey,
)
from .jobs import BackendJob, CommandJob, DevicesJob, SegmentationJob, TrainingJob
from .models import (
    MODEL_HELP,
    looksLikeHubId,
    modelDetails,
    modelHelpUrl,
    modelNote,
    modelNoteHtml,
    noTrainedModelNote,
    resolveCheckpoint,
)
from .modelstore import (
    IMPORT_FILE_FILTER,
    checkedModelName,
    displayCard,
    importedModelNote,
    importError,
    importHint,
    importModel,
    isImportedModel,
    listModels,
    modelCard,
    modelChoices,
    nameTaken,
    suggestedName,
)
from .modelstore import modelsFolder as importedModelsFolder
from .naming import defaultSegmentationName, nameKey, planSegmentNames, segmentIdByName, uniqueName
from .options import checkedDevice, checkedModality, modalityFromDicom
from .process import BackendProcess, popenLauncher
from .prompts import ABDOMEN13_PROMPTS, PRESETS, Preset, parsePrompts, preset, presetTitle, promptsText
from .roi import CropBox, bodyCropBox, cropBoxFromCorners, roiCorners
from .terminology import (
    INVALID_TERMINOLOGY_COLOR,
    TERMINOLOGY_CONTEXT,
    SegmentAppearance,
    TerminologyLookup,
    segmentAppearance,
    terminologyLabels,
)
from .warm import WarmBackend, WarmSegmentationJob

# TRAIN_OPTIONS: deprecated, see commands.trainOptions
__getattr__ = deprecated_names(__name__, {"TRAIN_OPTIONS": (trainOptions, "trainOptions()")})
