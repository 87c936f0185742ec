"""Typed, range-checked parameter sets of the four SVM processing steps.

One pydantic model per step (:class:`AlignmentParameters`, :class:`DrizzleParameters`,
:class:`CatalogParameters`, :class:`QualityParameters`) and :class:`ProductParameters`, which holds
the four for one product together with the product basename and the configuration conditions
that selected them (spec §9).

Every model forbids unknown keys, so a misspelled parameter in a configuration or custom
parameter file is an error instead of being silently ignored. All models are frozen: a step
that needs a different value makes a copy (``model_copy(update=...)``) instead of changing a
parameter set shared with other products (drizzlepac mutates its shared configuration lists).

Validation problems are reported as :class:`ParameterError` whose one-line message names the
file and the key, e.g. ``configs/acs_wfc.json: drizzle.final_pixfrac: must be <= 1.5 (got 2.0)``;
see :func:`format_validation_error`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)

from hap_models.quality import QualityThresholds
from hap_models.errors import HapError

__all__ = [
    "ParameterError",
    "STEP_NAMES",
    "STEP_MODELS",
    "DRIZZLE_KERNELS",
    "COMBINE_TYPES",
    "SKY_METHODS",
    "FIT_METHODS",
    "AlignmentGeneral",
    "RunAlign",
    "SourceCatalogSettings",
    "AstrometricCatalogSettings",
    "MatchSettings",
    "FitQualitySettings",
    "AlignmentParameters",
    "DrizzleParameters",
    "DaoSettings",
    "SourcexSettings",
    "CosmicRayFactor",
    "CatalogParameters",
    "CIFilterSettings",
    "CIFilter",
    "SwarmFilterSettings",
    "QualityParameters",
    "ProductParameters",
    "format_validation_error",
]

#: Step names used as keys of :class:`ProductParameters` and of custom parameter files.
STEP_NAMES: tuple[str, ...] = ("alignment", "drizzle", "catalog_generation", "quality_control")

DRIZZLE_KERNELS: tuple[str, ...] = ("square", "point", "turbo", "gaussian", "lanczos3", "tophat")
COMBINE_TYPES: tuple[str, ...] = ("median", "mean", "minmed", "imedian", "imean", "iminmed")
SKY_METHODS: tuple[str, ...] = ("match", "localmin", "globalmin", "globalmin+match")
FIT_METHODS: tuple[str, ...] = ("match_relative_fit", "match_2dhist_fit", "match_default_fit")


class ParameterError(HapError, ValueError):
    """A parameter file or parameter value is unusable.

    The message is one line naming the file and the key (or the product basename) at fault.
    Being a :class:`~hap_models.errors.HapError`, it maps to exit code 1 at the entry points.
    """


# --------------------------------------------------------------------------------------------
# Reusable annotated types
# --------------------------------------------------------------------------------------------


def _coerce_bits(value: Any) -> Any:
    """Accept DQ bit values as int, digit string, or comma/plus separated list of ints.

    drizzlepac parameter files store bits as strings ("336") and astrodrizzle accepts
    "16,64"; both are turned into the integer of the OR-ed flags.
    """
    if isinstance(value, bool):
        # bool is an int subclass; True would silently become bit 1
        raise ValueError("bit value must be an integer, not a boolean")
    if isinstance(value, str):
        text = value.strip()
        if not text:
            raise ValueError("bit value must not be empty")
        parts = [p.strip() for p in text.replace("+", ",").split(",")]
        if not all(p.isdigit() for p in parts):
            raise ValueError(f"bit value {value!r} is not an integer or a list of integers")
        combined = 0
        for part in parts:
            combined |= int(part)
        return combined
    return value


def _coerce_pair(value: Any) -> Any:
    """Accept a pair of numbers as a sequence or as drizzlepac's "4 3" string."""
    if isinstance(value, str):
        return value.replace(",", " ").split()
    return value


def _blank_to_none(value: Any) -> Any:
    """drizzlepac writes "" for "not set" in the instrument parameters; use None instead."""
    if isinstance(value, str) and not value.strip():
        return None
    return value


DQBits = Annotated[int, BeforeValidator(_coerce_bits), Field(ge=0, le=65535)]
PositiveFloat = Annotated[float, Field(gt=0)]
PositiveInt = Annotated[int, Field(gt=0)]
NonNegativeInt = Annotated[int, Field(ge=0)]
Fraction = Annotated[float, Field(ge=0, le=1)]
PositivePair = Annotated[
    tuple[PositiveFloat, PositiveFloat], BeforeValidator(_coerce_pair)
]
Pixfrac = Annotated[float, Field(gt=0, le=1.5)]
Rotation = Annotated[float, Field(ge=-360, le=360)]
RightAscension = Annotated[float, Field(ge=0, lt=360)]
Declination = Annotated[float, Field(ge=-90, le=90)]
Kernel = Literal["square", "point", "turbo", "gaussian", "lanczos3", "tophat"]
WeightScale = Literal["exptime", "expsq"] | PositiveFloat
OptionalNumber = Annotated[float | None, BeforeValidator(_blank_to_none)]
FitMethod = Literal["match_relative_fit", "match_2dhist_fit", "match_default_fit"]
FitGeometry = Literal["shift", "rshift", "rscale", "general"]


class _StrictModel(BaseModel):
    """Base of all parameter models: unknown keys are errors, instances are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


# --------------------------------------------------------------------------------------------
# Alignment (spec §4, §9 "Alignment JSON layout")
# --------------------------------------------------------------------------------------------


class AlignmentGeneral(_StrictModel):
    """``general`` section of the alignment parameters."""

    min_fit_matches: PositiveInt
    max_fit_rms: PositiveFloat
    max_sources_per_chip: PositiveInt


class RunAlign(_StrictModel):
    """``run_align`` section: catalog and fit-method lists, fit geometry minimum-object table."""

    update_hdr_wcs: bool
    catalog_list: Annotated[tuple[str, ...], Field(min_length=1)]
    fit_algorithm_list_ngt1: Annotated[tuple[FitMethod, ...], Field(min_length=1)]
    fit_algorithm_list_n1: Annotated[tuple[FitMethod, ...], Field(min_length=1)]
    min_catalog_threshold: NonNegativeInt
    min_observable_threshold: NonNegativeInt
    max_fit_limit: PositiveFloat
    mosaic_catalog_list: Annotated[tuple[str, ...], Field(min_length=1)]
    mosaic_fit_list: Annotated[tuple[FitMethod, ...], Field(min_length=1)]
    # value = minimum number of matched objects needed for that fit geometry
    mosaic_fitgeom_list: Annotated[dict[FitGeometry, PositiveInt], Field(min_length=1)]
    mosaic_relgeom_list: Annotated[dict[FitGeometry, PositiveInt], Field(min_length=1)]


class SourceCatalogSettings(_StrictModel):
    """``generate_source_catalogs`` section: per-exposure source detection (spec §4.2)."""

    box_size: PositiveInt
    win_size: PositiveInt
    nsigma: PositiveFloat
    centering_mode: Literal["starfind", "segmentation"]
    bkg_estimator: Literal[
        "SExtractorBackground",
        "MedianBackground",
        "MeanBackground",
        "MMMBackground",
        "BiweightLocationBackground",
        "ModeEstimatorBackground",
    ]
    rms_estimator: Literal["StdBackgroundRMS", "MADStdBackgroundRMS", "BiweightScaleBackgroundRMS"]
    num_sources: PositiveInt
    deblend: bool
    fwhmpsf: PositiveFloat
    classify: bool
    # negative = scale the default (background + nsigma * rms) threshold by |threshold|
    threshold: float

    @model_validator(mode="after")
    def _threshold_not_zero(self) -> SourceCatalogSettings:
        if self.threshold == 0:
            raise ValueError("threshold must not be 0 (negative = scale factor, positive = value)")
        return self


class AstrometricCatalogSettings(_StrictModel):
    """``generate_astrometric_catalog`` section."""

    gaia_only: bool
    existing_wcs: str | None


class MatchSettings(_StrictModel):
    """One ``match_*_fit`` section: tweakwcs XYXYMatch parameters and fit geometry (spec §4.5)."""

    fitgeom: FitGeometry
    searchrad: PositiveFloat
    separation: PositiveFloat
    tolerance: PositiveFloat
    use2dhist: bool


class FitQualitySettings(_StrictModel):
    """``determine_fit_quality`` section: fit acceptance limits (spec §4.6)."""

    min_catalog_threshold: NonNegativeInt
    min_observable_threshold: NonNegativeInt
    min_cross_matches: NonNegativeInt
    min_fit_matches: PositiveInt
    max_fit_rms: PositiveFloat
    max_fit_limit: PositiveFloat
    max_sources_per_chip: PositiveInt
    mas_to_arcsec: PositiveFloat
    good_fit_quality_values: Annotated[
        tuple[Annotated[int, Field(ge=1, le=5)], ...], Field(min_length=1)
    ]


class AlignmentParameters(_StrictModel):
    """Alignment parameters of a detector (one set per detector, shared by all its products)."""

    general: AlignmentGeneral
    run_align: RunAlign
    generate_source_catalogs: SourceCatalogSettings
    generate_astrometric_catalog: AstrometricCatalogSettings
    match_relative_fit: MatchSettings
    match_2dhist_fit: MatchSettings
    match_default_fit: MatchSettings
    determine_fit_quality: FitQualitySettings

    def flattened(self) -> dict[str, Any]:
        """Return the merged single-level dict the fit loop uses.

        Sections are merged run_align <- general <- generate_source_catalogs <-
        determine_fit_quality, later wins (spec §4.1), so e.g. ``max_sources_per_chip`` is the
        ``determine_fit_quality`` value.
        """
        merged: dict[str, Any] = {}
        for section in (
            self.run_align,
            self.general,
            self.generate_source_catalogs,
            self.determine_fit_quality,
        ):
            merged.update(section.model_dump())
        return merged

    def fit_methods(self, n_exposures: int) -> tuple[str, ...]:
        """Return the fit methods to try, in order, for a detector with ``n_exposures`` exposures.

        The relative fit needs at least two images, so it is dropped for a single exposure.
        Unlike drizzlepac this returns a new tuple instead of deleting from the shared list.
        """
        methods = self.run_align.mosaic_fit_list
        if n_exposures < 2:
            return tuple(m for m in methods if m != "match_relative_fit")
        return tuple(methods)

    def match_settings(self, method: str) -> MatchSettings:
        """Return the matching parameters of fit ``method`` (one of :data:`FIT_METHODS`)."""
        if method not in FIT_METHODS:
            raise ParameterError(f"unknown fit method {method!r}; known: {', '.join(FIT_METHODS)}")
        return getattr(self, method)


# --------------------------------------------------------------------------------------------
# Drizzle (AstroDrizzle parameters, flattened; spec §5.3)
# --------------------------------------------------------------------------------------------


class DrizzleParameters(_StrictModel):
    """AstroDrizzle parameters of one product, flattened (no "STEP n" sections).

    Bits parameters list the DQ flags treated as GOOD. Pairs (``combine_nsigma``,
    ``driz_cr_snr``, ``driz_cr_scale``) are stored as tuples of two floats; drizzlepac's
    ``"4 3"`` strings are accepted on input.
    """

    # general
    runfile: str
    wcskey: str
    proc_unit: Literal["native", "electrons"]
    coeffs: bool
    context: bool
    group: str
    build: bool
    crbit: DQBits
    stepsize: PositiveInt
    resetbits: DQBits
    num_cores: PositiveInt | None
    in_memory: bool
    # state of input files
    restore: bool
    preserve: bool
    overwrite: bool
    clean: bool
    # step 1: static mask
    static: bool
    static_sig: PositiveFloat
    # step 2: sky subtraction
    skysub: bool
    skymethod: Literal["match", "localmin", "globalmin", "globalmin+match"]
    skystat: Literal["median", "mode", "mean"]
    skywidth: PositiveFloat
    skylower: float | None
    skyupper: float | None
    skyclip: NonNegativeInt
    skylsigma: PositiveFloat
    skyusigma: PositiveFloat
    skymask_cat: str
    use_static: bool
    sky_bits: DQBits
    skyfile: str
    skyuser: str
    # step 3: drizzle separate images
    driz_separate: bool
    driz_sep_kernel: Kernel
    driz_sep_wt_scl: WeightScale
    driz_sep_pixfrac: Pixfrac
    driz_sep_fillval: float | None
    driz_sep_bits: DQBits
    driz_sep_compress: bool
    # step 3a: custom WCS for separate outputs
    driz_sep_wcs: bool
    driz_sep_refimage: str
    driz_sep_rot: Rotation | None
    driz_sep_scale: PositiveFloat | None
    driz_sep_outnx: PositiveInt | None
    driz_sep_outny: PositiveInt | None
    driz_sep_ra: RightAscension | None
    driz_sep_dec: Declination | None
    driz_sep_crpix1: float | None
    driz_sep_crpix2: float | None
    # step 4: median image
    median: bool
    median_newmasks: bool
    combine_maskpt: Fraction
    combine_type: Literal["median", "mean", "minmed", "imedian", "imean", "iminmed"]
    combine_nsigma: PositivePair
    combine_nhigh: NonNegativeInt
    combine_nlow: NonNegativeInt
    combine_lthresh: float | None
    combine_hthresh: float | None
    combine_grow: NonNegativeInt
    combine_bufsize: PositiveFloat | None
    # step 5: blot
    blot: bool
    blot_interp: Literal["nearest", "linear", "poly3", "poly5", "sinc", "lan3", "lan5"]
    blot_sinscl: PositiveFloat
    blot_addsky: bool
    blot_skyval: float
    # step 6: cosmic rays (driz_cr)
    driz_cr: bool
    driz_cr_corr: bool
    driz_cr_snr: PositivePair
    driz_cr_grow: PositiveInt
    driz_cr_ctegrow: NonNegativeInt
    driz_cr_scale: PositivePair
    # step 7: final drizzle
    driz_combine: bool
    final_wht_type: Literal["EXP", "IVM", "ERR"]
    final_kernel: Kernel
    final_wt_scl: WeightScale
    final_pixfrac: Pixfrac
    final_fillval: float | None
    final_maskval: float | None
    final_bits: DQBits
    final_units: Literal["cps", "counts"]
    # step 7a: custom WCS for final output
    final_wcs: bool
    final_refimage: str
    final_rot: Rotation | None
    final_scale: PositiveFloat | None
    final_outnx: PositiveInt | None
    final_outny: PositiveInt | None
    final_ra: RightAscension | None
    final_dec: Declination | None
    final_crpix1: float | None
    final_crpix2: float | None
    # instrument parameters
    gain: OptionalNumber
    gnkeyword: str
    rdnoise: OptionalNumber
    rnkeyword: str
    exptime: OptionalNumber
    expkeyword: str
    # hapsvm: cosmic rays of an exposure flagged crclean (the only exposure of its filter, not
    # WFC3/IR) found on its own chips by L.A.Cosmic (hapcore.drizzle.single_exposure_cr) and
    # excluded from the filter and total drizzles as driz_cr's masks are. drizzlepac means to
    # flag them (spec §5.6) but never does: a 1 x UVIS visit's catalogs were mostly cosmic rays.
    # Drizzle tests' visit: 96.5% of the 5-sigma cosmic-ray pixels found, 0.017% of star light
    # lost (L.A.Cosmic's own growth and saturated cores: 4.3%; see the module).
    single_exposure_cr: bool = True
    single_exposure_cr_sigclip: PositiveFloat = 4.5
    single_exposure_cr_objlim: PositiveFloat = 5.0

    @model_validator(mode="after")
    def _check_combine_rejection(self) -> DrizzleParameters:
        if (
            self.combine_lthresh is not None
            and self.combine_hthresh is not None
            and self.combine_lthresh >= self.combine_hthresh
        ):
            raise ValueError("combine_lthresh must be below combine_hthresh")
        return self

    @property
    def cr_rejection_enabled(self) -> bool:
        """True if the full cosmic-ray pipeline (separate drizzle, median, blot, driz_cr) runs."""
        return self.driz_separate and self.median and self.blot and self.driz_cr


# --------------------------------------------------------------------------------------------
# Catalog generation (spec §6.1)
# --------------------------------------------------------------------------------------------


class DaoSettings(_StrictModel):
    """``dao`` section (logged only by drizzlepac)."""

    bkgsig_sf: PositiveFloat
    kernel_sd_aspect_ratio: Annotated[float, Field(gt=0, le=1)]


class SourcexSettings(_StrictModel):
    """``sourcex`` section: segmentation-catalog detection and deblending (spec §6.4)."""

    source_box: PositiveInt
    segm_nsigma: PositiveFloat
    nlevels: PositiveInt
    contrast: Fraction
    border: NonNegativeInt
    rw2d_size: PositiveInt
    rw2d_nsigma: PositiveFloat
    rw2d_biggest_pixels: PositiveInt
    rw2d_biggest_source: Annotated[float, Field(gt=0, le=1)]
    rw2d_source_fraction: Annotated[float, Field(gt=0, le=1)]
    biggest_source_deblend_limit: Annotated[float, Field(gt=0, le=1)]
    source_fraction_deblend_limit: Annotated[float, Field(gt=0, le=1)]
    ratio_bigsource_limit: PositiveFloat
    ratio_bigsource_deblend_limit: PositiveFloat
    kron_scaling_radius: PositiveFloat
    kron_minimum_radius: PositiveFloat


class CosmicRayFactor(_StrictModel):
    """Factors of the cosmic-ray-dominance test per catalog type (spec §6.8)."""

    aperture: PositiveFloat
    segment: PositiveFloat


class CatalogParameters(_StrictModel):
    """Catalog-generation parameters (point and segmentation catalogs)."""

    bkg_box_size: PositiveInt
    bkg_filter_size: PositiveInt
    good_fwhm: tuple[PositiveFloat, PositiveFloat]
    nsigma: PositiveFloat
    skyannulus_arcsec: PositiveFloat
    dskyannulus_arcsec: PositiveFloat
    aperture_1: PositiveFloat
    aperture_2: PositiveFloat
    salgorithm: Literal["mode", "median", "mean"]
    starfinder_algorithm: Literal["psf", "dao", "iraf"]
    scale: PositiveFloat
    sensitivity: Annotated[float, Field(gt=0, lt=1)]
    block_size: tuple[PositiveInt, PositiveInt]
    cr_residual: Fraction
    region_size: PositiveInt
    flag_trim_value: NonNegativeInt
    simple_bkg: bool
    zero_percent: Annotated[float, Field(ge=0, le=100)]
    negative_percent: Annotated[float, Field(ge=0, le=100)]
    nsigma_clip: PositiveFloat
    maxiters: PositiveInt
    bkg_skew_threshold: Annotated[float, Field(ge=0)]
    tweak_fwhmpsf: PositiveFloat
    # None: the detector is exempt from the cosmic-ray-dominance test (IR, SBC)
    crfactor: CosmicRayFactor | None
    dao: DaoSettings
    sourcex: SourcexSettings
    # Filter catalogs keep only the rows of the trimmed total catalog (drizzlepac's documented
    # behaviour; its code never trims them, spec §12.6). False: every detection, as drizzlepac.
    trim_filter_catalogs: bool = True
    # Cross-exposure check (hapcore.catalogs.exposure_check): a row whose aperture-2 flux in a
    # covering exposure product is below the filter flux by more than nsigma x its error plus
    # tolerance x the flux is a cosmic-ray residual (flag 16). None: no check (drizzlepac).
    exposure_check_nsigma: PositiveFloat | None = 4.0
    exposure_check_tolerance: Annotated[float, Field(ge=0, le=1)] = 0.1
    # Cross-filter check (hapcore.catalogs.filter_consistency), read from the total product's
    # parameters: a row whose aperture-2 S/N reaches filter_consistency_snr in exactly one of
    # >= 2 covering filters, stays below filter_consistency_max_snr there, and that filter has
    # at most filter_consistency_max_exposures exposures, is a cosmic-ray residual (flag 16 in
    # that filter). None: no check (drizzlepac).
    # A row whose highest-S/N filter flags it 16 while no other covering filter sees it at
    # filter_consistency_support_snr or above gets 16 in every filter (also off with None).
    filter_consistency_snr: PositiveFloat | None = 2.5
    filter_consistency_max_snr: PositiveFloat = 50.0
    filter_consistency_max_exposures: Annotated[int, Field(ge=1)] = 2
    filter_consistency_support_snr: PositiveFloat = 8.0
    # Swarm filter (hapcore.catalogs.swarm): a point source within swarm_radius_arcsec of a
    # neighbour swarm_min_ratio times brighter whose aperture-2 sum exceeds the neighbour's
    # azimuthal median at the same distance by less than swarm_nsigma sigma is a feature of
    # that neighbour's profile (flag 32). None: no filter (drizzlepac never sets flag 32).
    swarm_nsigma: PositiveFloat | None = 3.0
    swarm_radius_arcsec: PositiveFloat = 1.0
    swarm_min_ratio: PositiveFloat = 10.0
    # PSF features (hapcore.catalogs.psf_features): the product's PSF, stacked from its bright
    # isolated stars out to psf_feature_radius_arcsec, is scaled to every bright star; a point
    # source whose aperture-2 light that prediction explains (the rest below
    # psf_feature_nsigma sigma, with psf_feature_model_error of the prediction as its error)
    # is a ring/spike/halo feature (flag 32). None: no test.
    psf_feature_nsigma: PositiveFloat | None = 3.0
    psf_feature_radius_arcsec: PositiveFloat = 3.0
    psf_feature_model_error: Annotated[float, Field(ge=0.0)] = 0.2
    # Saturated stars (hapcore.catalogs.saturated_features): a point or segment row within
    # saturated_feature_radius_arcsec of a saturated star whose aperture-2 light that star's
    # halo/ring (azimuthal median) or spike (four-fold copies) light explains, within
    # saturated_feature_nsigma sigma and saturated_feature_model_error of it, is a feature of
    # the star (flag 32); so are the rows on its saturated pixels other than the star itself.
    # None: only the rows on the saturated pixels.
    saturated_feature_nsigma: PositiveFloat | None = 3.0
    saturated_feature_radius_arcsec: PositiveFloat = 12.0
    saturated_feature_model_error: Annotated[float, Field(ge=0.0)] = 0.3
    # Point-catalog errors (hapcore.catalogs.noise, photometry): the sky terms are scaled by the
    # product's empty-aperture variance factor (drizzled pixels share noise: pulls had a robust
    # spread of 1.6 without it), and flux_error_floor of the flux is added in quadrature (the
    # 0.5% scatter of bright stars' aperture fluxes on drizzled products that no noise term has).
    correlated_noise: bool = True
    flux_error_floor: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.005
    # The PSF's own light in the sky annulus (hapcore.catalogs.annulus_light), measured on a PSF
    # stacked from the filter product's stars, added back to the aperture fluxes; CI limits
    # shift with the CI. Off by default: it brings the UVIS MagAp2 bias from +0.008 to -0.003
    # mag, but its per-star sky is noisier (7% of bright stars outside 3 sigma against an
    # independent catalog, 2% without); the IR/WFPC2 annulus outside aperture 2 already brings
    # their bias from +0.023 to +0.005 mag.
    annulus_light_correction: bool = False
    # Aperture correction (hapcore.catalogs.aperture_correction), recorded in the filter
    # catalogs' metadata only (MagAp2 stays uncorrected, as in drizzlepac): "measured" from the
    # product's bright (aperture-2 S/N >= aperture_correction_min_snr) isolated stars, their
    # curve of growth to 1" (IR 1.5") and the handbook encircled energy beyond; the CI table's
    # value with fewer than aperture_correction_min_stars stars. "table": the CI table's value.
    aperture_correction: Literal["measured", "table"] = "measured"
    aperture_correction_min_stars: PositiveInt = 5
    aperture_correction_min_snr: PositiveFloat = 50.0
    # Sharpness test (hapcore.catalogs.sharpness): a point source whose DAOStarFinder sharpness
    # is more than sharpness_nsigma robust sigma above the locus of the catalog's good point
    # sources (S/N 20-500, unsaturated) is a cosmic ray or hot pixel (flag 16). None: no test.
    sharpness_nsigma: PositiveFloat | None = 3.0
    # CI limits on the product's stellar locus (hapcore.catalogs.stellar_locus): both limits of
    # each catalog move by the offset of its stars' CI (S/N > 20) from the CI table's stellar
    # peak (at most 0.4 down, 0.2 up). False: the table's limits (drizzlepac), moved only with
    # the sky annulus.
    ci_limits_from_locus: bool = True

    @model_validator(mode="after")
    def _check_ordering(self) -> CatalogParameters:
        if self.aperture_1 >= self.aperture_2:
            raise ValueError(
                f"aperture_1 ({self.aperture_1}) must be smaller than aperture_2 ({self.aperture_2})"
            )
        if self.good_fwhm[0] >= self.good_fwhm[1]:
            raise ValueError(f"good_fwhm {list(self.good_fwhm)} must be [low, high] with low < high")
        return self


# --------------------------------------------------------------------------------------------
# Quality control (spec §6.1 "Quality control JSON", §6.6, §6.7)
# --------------------------------------------------------------------------------------------


class CIFilterSettings(_StrictModel):
    """Concentration-index flagging limits of one catalog type."""

    bthresh: PositiveFloat
    lookup_ci_limits_from_table: bool
    ci_lower_limit: float
    ci_upper_limit: float

    @model_validator(mode="after")
    def _check_limits(self) -> CIFilterSettings:
        if self.ci_lower_limit >= self.ci_upper_limit:
            raise ValueError(
                f"ci_lower_limit ({self.ci_lower_limit}) must be below "
                f"ci_upper_limit ({self.ci_upper_limit})"
            )
        return self


class CIFilter(_StrictModel):
    """``ci_filter`` section: settings for the point (aperture) and segment catalogs."""

    aperture: CIFilterSettings
    segment: CIFilterSettings


class SwarmFilterSettings(_StrictModel):
    """``swarm_filter`` section; the swarm flagging itself is disabled (as in drizzlepac)."""

    hla_plate_scale: PositiveFloat


class QualityParameters(_StrictModel):
    """Quality-control parameters: catalog flagging (spec §6.6-6.7) and the limits of hapsvm's
    pass/fail quality summary (issue #7)."""

    ci_filter: CIFilter
    swarm_filter: SwarmFilterSettings
    summary_thresholds: QualityThresholds = Field(default_factory=QualityThresholds)


# --------------------------------------------------------------------------------------------
# Product
# --------------------------------------------------------------------------------------------


class ProductParameters(_StrictModel):
    """The four step parameter sets of one product, with what selected them.

    Attributes
    ----------
    product_basename : str
        Product basename, e.g. ``hst_10374_06_acs_wfc_f814w_j97e06`` (the key in custom
        parameter files).
    instrument, detector : str
        Lower-case instrument and detector (``wfpc2``/``pc`` for WFPC2).
    product_kind : {"total", "filter", "exposure"}
    filter_name : str or None
        Filter of filter and exposure products; None for total products.
    conditions : tuple of str
        Configuration conditions, in merge order (spec §9).
    """

    product_basename: Annotated[str, Field(min_length=1)]
    instrument: str
    detector: str
    product_kind: Literal["total", "filter", "exposure"]
    filter_name: str | None
    conditions: tuple[str, ...]
    alignment: AlignmentParameters
    drizzle: DrizzleParameters
    catalog: CatalogParameters
    quality: QualityParameters

    def step_dicts(self) -> dict[str, dict[str, Any]]:
        """Return ``{step name: JSON-ready dict}`` for the four steps (custom-file layout)."""
        return {
            "alignment": self.alignment.model_dump(mode="json"),
            "drizzle": self.drizzle.model_dump(mode="json"),
            "catalog_generation": self.catalog.model_dump(mode="json"),
            "quality_control": self.quality.model_dump(mode="json"),
        }


#: Step name (custom-file key) -> (model class, ProductParameters attribute).
STEP_MODELS: Mapping[str, tuple[type[_StrictModel], str]] = {
    "alignment": (AlignmentParameters, "alignment"),
    "drizzle": (DrizzleParameters, "drizzle"),
    "catalog_generation": (CatalogParameters, "catalog"),
    "quality_control": (QualityParameters, "quality"),
}


def format_validation_error(
    error: ValidationError,
    *,
    step: str,
    source: str | Callable[[tuple[str, ...]], str],
) -> str:
    """Turn a pydantic ``ValidationError`` into ``"<file>: <step>.<key>: <reason>"`` text.

    Parameters
    ----------
    error : pydantic.ValidationError
        The error raised when validating one step's parameter dict.
    step : str
        Step name, used as the key prefix.
    source : str or callable
        The file the values came from, or a function mapping a key path (tuple of key names)
        to the file that supplied that key (used when a step merges several files).

    Returns
    -------
    str
        One line per problem, joined with ``"; "`` so the message stays on one line.
    """
    messages = []
    for item in error.errors(include_url=False):
        # drop pydantic's internal loc parts (e.g. function-after[...]) and tuple indices stay
        path = tuple(str(part) for part in item["loc"] if not str(part).startswith("function-"))
        key = ".".join((step, *path)) if path else step
        file_name = source(path) if callable(source) else source
        messages.append(f"{file_name}: {key}: {_describe(item)}")
    return "; ".join(messages)


def _describe(item: Mapping[str, Any]) -> str:
    """Short reason text for one pydantic error item."""
    kind = item.get("type", "")
    if kind == "extra_forbidden":
        return "unknown parameter"
    if kind == "missing":
        return "required parameter is missing"
    message = str(item.get("msg", "invalid value"))
    # pydantic prefixes messages raised in validators with "Value error, "
    message = message.removeprefix("Value error, ")
    value = item.get("input")
    if kind in {"model_type", "dict_type"} or "input" not in item or isinstance(value, Mapping):
        return message
    return f"{message[:1].lower()}{message[1:]} (got {item['input']!r})"
