<#
.SYNOPSIS
    FaceSwap Cam installer for Windows (end users; developers use installers\bootstrap.py).

.DESCRIPTION
    Installs faceswap-cam into its own virtual environment in %LOCALAPPDATA%\FaceSwapCam\venv,
    puts a faceswap-cam command on the user's PATH (%LOCALAPPDATA%\FaceSwapCam\bin) and
    registers the background service (a per-user logon task) with
    "faceswap-cam service install". It explains the two virtual-camera drivers: Unity Capture
    (registered as "FaceSwap Cam") or OBS Virtual Camera. Safe to re-run: steps already done
    are reported as "ok" and left alone.

    -Uninstall removes the service, the command, the PATH entry and the venv, and keeps the
    reference faces and models (in %LOCALAPPDATA%\faceswap-cam\faceswap-cam) unless -Purge.

.PARAMETER Source
    What to pip install: a folder, a wheel/sdist, a requirement or a URL. Default: the
    checkout this script is in.
.PARAMETER NoModels
    Skip the model extra (torch, diffusers...): the daemon runs in passthrough.
.PARAMETER NoService
    Do not install (or, with -Uninstall, remove) the background service.
.PARAMETER Force
    Reinstall the package even if it is up to date.
.PARAMETER Uninstall
    Remove what this installer added.
.PARAMETER Purge
    With -Uninstall: also delete reference faces, models and settings.
.PARAMETER DryRun
    Print each action instead of doing it.
.PARAMETER Python
    The Python 3.11+ to build the venv from (default: the py launcher, then python on PATH).

.EXAMPLE
    powershell -ExecutionPolicy Bypass -File installers\install-windows.ps1
.EXAMPLE
    powershell -ExecutionPolicy Bypass -File installers\install-windows.ps1 -Uninstall
#>
[CmdletBinding()]
param(
    [string]$Source = '',
    [switch]$NoModels,
    [switch]$NoService,
    [switch]$Force,
    [switch]$Uninstall,
    [switch]$Purge,
    [switch]$DryRun,
    [string]$Python = ''
)

Set-StrictMode -Version Latest
$ErrorActionPreference = 'Stop'

if ($Purge -and -not $Uninstall) { throw '-Purge only goes with -Uninstall' }
if (-not $env:LOCALAPPDATA) { throw 'LOCALAPPDATA is not set: run this as a normal Windows user' }

$Root = Join-Path $env:LOCALAPPDATA 'FaceSwapCam'
$Venv = Join-Path $Root 'venv'
$VenvPython = Join-Path $Venv 'Scripts\python.exe'
$Entry = Join-Path $Venv 'Scripts\faceswap-cam.exe'
$BinDir = Join-Path $Root 'bin'
$Shim = Join-Path $BinDir 'faceswap-cam.cmd'
# Kept unexpanded in the user's PATH so the entry survives a renamed profile folder.
$BinDirForPath = '%LOCALAPPDATA%\FaceSwapCam\bin'
# What the last pip install was given; equal on a re-run means pip has nothing to do.
$Stamp = Join-Path $Venv '.faceswap-cam-installer'
# platformdirs' user_data_dir('faceswap-cam') on Windows (appauthor defaults to the app name):
# the app keeps references, models and settings there, outside what this installer owns.
$AppAuthorDir = Join-Path $env:LOCALAPPDATA 'faceswap-cam'
$AppDataDir = Join-Path $AppAuthorDir 'faceswap-cam'
# The shim expands %LOCALAPPDATA% when it runs: cmd.exe reads .cmd files in the OEM code
# page, so a literal path with non-ASCII letters in the user name would break.
$ShimText = "@echo off`r`n`"%LOCALAPPDATA%\FaceSwapCam\venv\Scripts\faceswap-cam.exe`" %*`r`n"
$CameraLabel = 'FaceSwap Cam'

$script:Changes = 0

function Write-Ok([string]$Message) { Write-Host "ok: $Message" }
function Write-Note([string]$Message) { Write-Host "note: $Message" }
function Write-Change { $script:Changes++ }

# The closing line of an install or an uninstall: a dry run, nothing to do, or what was done.
function Write-Summary([string]$Unchanged, [string]$Changed) {
    Write-Host ''
    if ($DryRun) {
        Write-Host 'Dry run finished: nothing was changed.'
    } elseif ($script:Changes -eq 0) {
        Write-Host $Unchanged
    } else {
        Write-Host $Changed
    }
}

function Format-Command([string]$Exe, [string[]]$Arguments) {
    $parts = @($Exe) + @($Arguments) | ForEach-Object {
        if ($_ -match '[\s"]' -or $_ -eq '') { '"' + ($_ -replace '"', '\"') + '"' } else { $_ }
    }
    return ($parts -join ' ')
}

# Runs a native program (or prints it in a dry run); a non-zero exit code is an error.
function Invoke-Native([string]$Exe, [string[]]$Arguments) {
    $shown = Format-Command $Exe $Arguments
    if ($DryRun) {
        Write-Host "would run: $shown"
        return
    }
    Write-Host "+ $shown"
    & $Exe @Arguments
    if ($LASTEXITCODE -ne 0) { throw "failed (exit code $LASTEXITCODE): $shown" }
}

# Runs a PowerShell action, or prints its description in a dry run.
function Invoke-Step([string]$Description, [scriptblock]$Action) {
    if ($DryRun) {
        Write-Host "would: $Description"
        return
    }
    Write-Host "+ $Description"
    & $Action
}

function Test-Python([string]$Exe, [string[]]$Prefix = @()) {
    # Windows PowerShell 5.1 turns a native program's redirected stderr into errors, which
    # 'Stop' would throw: here a failing probe is an answer, not an error.
    $ErrorActionPreference = 'Continue'
    try {
        & $Exe @Prefix -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>$null |
            Out-Null
        return ($LASTEXITCODE -eq 0)
    } catch {
        return $false
    }
}

# Returns the full path of a Python 3.11+ interpreter. The py launcher is tried first because
# "python" on a fresh Windows is often the Microsoft Store alias, which opens the Store.
function Find-Python {
    if ($Python) {
        if (Test-Python $Python) { return $Python }
        throw "$Python is not a working Python 3.11 or newer"
    }
    foreach ($candidate in @('py -3.12', 'py -3.13', 'py -3.11', 'python')) {
        $exe, $prefix = $candidate -split ' ', 2
        $prefix = @($prefix | Where-Object { $_ })
        if (-not (Get-Command $exe -ErrorAction SilentlyContinue)) { continue }
        if (Test-Python $exe $prefix) {
            $found = & $exe @prefix -c 'import sys; print(sys.executable)'
            return ([string]$found).Trim()
        }
    }
    throw ('FaceSwap Cam needs Python 3.11 or newer: install it from https://www.python.org ' +
        '(or: winget install Python.Python.3.12), or pass -Python C:\path\to\python.exe')
}

function Get-SourceFile([string]$Dir) {
    foreach ($item in Get-ChildItem -LiteralPath $Dir -Force) {
        if ($item.PSIsContainer) {
            # Build outputs, caches and venvs change without the source changing.
            if ($item.Name -notmatch '^(\..+|build|dist|venv|__pycache__|.*\.egg-info|node_modules)$') {
                Get-SourceFile $item.FullName
            }
        } else {
            $item
        }
    }
}

# A fingerprint of what would be installed: the files of a source folder, the bytes of a
# wheel/sdist, or the requirement text itself.
function Get-SourceDigest([string]$Path) {
    $sha = [System.Security.Cryptography.SHA256]::Create()
    if (Test-Path -LiteralPath $Path -PathType Container) {
        $base = (Resolve-Path -LiteralPath $Path).Path.TrimEnd('\') + '\'
        [string[]]$lines = @(Get-SourceFile $Path | ForEach-Object {
            $relative = $_.FullName.Substring($base.Length)
            (Get-FileHash -Algorithm SHA256 -LiteralPath $_.FullName).Hash + '  ' + $relative
        })
        [Array]::Sort($lines, [StringComparer]::Ordinal)
        $bytes = [Text.Encoding]::UTF8.GetBytes(($lines -join "`n"))
    } elseif (Test-Path -LiteralPath $Path -PathType Leaf) {
        return (Get-FileHash -Algorithm SHA256 -LiteralPath $Path).Hash
    } else {
        $bytes = [Text.Encoding]::UTF8.GetBytes($Path)
    }
    return (($sha.ComputeHash($bytes) | ForEach-Object { $_.ToString('x2') }) -join '')
}

function Resolve-Requirement {
    $source = $Source
    if (-not $source) {
        $repo = Split-Path -Parent $PSScriptRoot
        $pyproject = Join-Path $repo 'pyproject.toml'
        if (-not ((Test-Path $pyproject) -and
                (Select-String -LiteralPath $pyproject -Pattern '^name = "faceswap-cam"' -Quiet))) {
            throw 'this script is not inside a faceswap-cam checkout; pass -Source PATH_OR_SPEC'
        }
        $source = $repo
    }
    $extras = if ($NoModels) { 'tray' } else { 'models,tray' }
    if (Test-Path -LiteralPath $source) {
        $source = (Resolve-Path -LiteralPath $source).Path
        $requirement = '{0}[{1}]' -f $source, $extras
    } elseif ($source.Contains('[')) {
        $requirement = $source
    } elseif ($source.Contains('://')) {
        $requirement = 'faceswap-cam[{0}] @ {1}' -f $extras, $source
    } else {
        $requirement = $source -replace '^([A-Za-z0-9._-]*)', ('$1[' + $extras + ']')
    }
    return [pscustomobject]@{
        Source = $source
        Requirement = $requirement
        Id = "requirement=$requirement`ndigest=$(Get-SourceDigest $source)"
    }
}

function Install-Venv([string]$PythonExe) {
    if ((Test-Path -LiteralPath $VenvPython) -and (Test-Python $VenvPython)) {
        Write-Ok "virtual environment $Venv"
        return
    }
    if (Test-Path -LiteralPath $Venv) {
        # Typically its base Python was uninstalled or upgraded: rebuild it in place.
        Write-Host "the virtual environment in $Venv is broken; rebuilding it"
        Invoke-Native $PythonExe @('-m', 'venv', '--clear', $Venv)
    } else {
        Invoke-Native $PythonExe @('-m', 'venv', $Venv)
    }
    Write-Change
}

function Install-Package($Resolved) {
    $current = if (Test-Path -LiteralPath $Stamp) { (Get-Content -LiteralPath $Stamp -Raw).Trim() } else { '' }
    if (-not $Force -and (Test-Path -LiteralPath $Entry) -and $current -eq $Resolved.Id) {
        Write-Ok "faceswap-cam is up to date in the venv (from $($Resolved.Source); -Force reinstalls)"
        return
    }
    if ($NoModels) {
        Write-Host "installing $($Resolved.Requirement) (without the model extra: passthrough only)"
    } else {
        Write-Host "installing $($Resolved.Requirement) (the model stack is several GB: the first run takes a while)"
    }
    Invoke-Native $VenvPython @('-m', 'pip', 'install', '--disable-pip-version-check', $Resolved.Requirement)
    if (-not $DryRun) {
        [IO.File]::WriteAllText($Stamp, $Resolved.Id + "`n")
    }
    Write-Change
    if (-not $NoModels -and -not $DryRun) { Test-TorchCuda }
}

# PyPI's torch wheels for Windows are CPU-only, so an NVIDIA GPU would sit idle.
function Test-TorchCuda {
    if (-not (Get-Command nvidia-smi -ErrorAction SilentlyContinue)) { return }
    $ErrorActionPreference = 'Continue'  # see Test-Python
    $cuda = & $VenvPython -c 'import torch; print(torch.version.cuda or "")' 2>$null
    if ($LASTEXITCODE -eq 0 -and -not ([string]$cuda).Trim()) {
        Write-Note ('this torch is the CPU-only build, but there is an NVIDIA GPU: install the ' +
            'CUDA build with: "' + $VenvPython + '" -m pip install --force-reinstall torch ' +
            'torchvision --index-url https://download.pytorch.org/whl/cu128')
    }
}

function Get-UserPath {
    # Read unexpanded, so entries like %USERPROFILE%\bin are written back as they were.
    $key = Get-Item -LiteralPath 'HKCU:\Environment'
    return [string]$key.GetValue('Path', '', 'DoNotExpandEnvironmentNames')
}

function Set-UserPath([string]$Value) {
    Set-ItemProperty -LiteralPath 'HKCU:\Environment' -Name 'Path' -Value $Value -Type ExpandString
    # Setting any user variable through .NET broadcasts WM_SETTINGCHANGE, so new terminals
    # opened from Explorer see the new PATH without a sign-out.
    [Environment]::SetEnvironmentVariable('FACESWAP_CAM_INSTALLER_REFRESH', [NullString]::Value, 'User')
}

function Test-OurPathEntry([string]$PathEntry) {
    return ($PathEntry -eq $BinDirForPath) -or
        ([Environment]::ExpandEnvironmentVariables($PathEntry).TrimEnd('\') -eq $BinDir)
}

function Install-Command {
    if ((Test-Path -LiteralPath $Shim) -and ([IO.File]::ReadAllText($Shim) -eq $ShimText)) {
        Write-Ok "$Shim"
    } else {
        Invoke-Step "write $Shim" {
            New-Item -ItemType Directory -Force -Path $BinDir | Out-Null
            [IO.File]::WriteAllText($Shim, $ShimText, [Text.Encoding]::ASCII)
        }
        Write-Change
    }
    $entries = @((Get-UserPath) -split ';' | Where-Object { $_ })
    if (@($entries | Where-Object { Test-OurPathEntry $_ }).Count -gt 0) {
        Write-Ok "$BinDirForPath is on your PATH"
    } else {
        Invoke-Step "add $BinDirForPath to your user PATH" {
            Set-UserPath ((@($entries) + $BinDirForPath) -join ';')
        }
        Write-Change
        Write-Note 'open a new terminal for the faceswap-cam command'
    }
}

function Test-ServiceCommand {
    if (-not (Test-Path -LiteralPath $Entry)) { return $false }
    $ErrorActionPreference = 'Continue'  # see Test-Python
    & $Entry service --help *> $null
    return ($LASTEXITCODE -eq 0)
}

function Install-Service {
    if ($NoService) {
        Write-Note 'not installing the background service (-NoService)'
    } elseif ($DryRun -and -not (Test-Path -LiteralPath $Entry)) {
        Write-Host "would run: $(Format-Command $Entry @('service', 'install')) (if this version has it)"
    } elseif (Test-ServiceCommand) {
        # A per-user logon task; the command leaves an identical task alone.
        try {
            Invoke-Native $Entry @('service', 'install')
        } catch {
            Write-Warning "faceswap-cam service install failed: $_"
        }
    } else {
        Write-Note "this version has no 'service' command; start the daemon with: faceswap-cam run"
    }
}

function Show-VirtualCameraNotes {
    Write-Host '== virtual camera (one of these drivers)'
    Write-Note ("Unity Capture (https://github.com/schellingb/UnityCapture): download it and run " +
        "Install\InstallCustomName.bat as administrator; when it asks for the name, enter " +
        "`"$CameraLabel`", so apps list the camera as `"$CameraLabel`".")
    $obs = @("$env:ProgramFiles\obs-studio", "${env:ProgramFiles(x86)}\obs-studio") |
        Where-Object { $_ -and (Test-Path -LiteralPath $_) }
    if ($obs) {
        Write-Ok 'OBS Studio is installed'
    }
    Write-Note ('or OBS Studio (winget install OBSProject.OBSStudio): open it once and click ' +
        'Start Virtual Camera; apps then list "OBS Virtual Camera". FaceSwap Cam uses Unity ' +
        'Capture when it is registered, else OBS Virtual Camera.')
}

function Invoke-Install {
    Write-Host 'FaceSwap Cam installer (Windows)'
    if ($DryRun) { Write-Host 'dry run: printing actions, changing nothing' }
    $pythonExe = Find-Python
    $resolved = Resolve-Requirement
    Install-Venv $pythonExe
    Install-Package $resolved
    Install-Command
    Show-VirtualCameraNotes
    Install-Service
    Write-Summary 'Nothing to change: FaceSwap Cam is installed and up to date.' `
        "Done ($($script:Changes) change(s))."
    Write-Host 'Next steps:'
    Write-Host '  faceswap-cam doctor            check the camera, the virtual camera and the GPU'
    if ($NoModels) {
        Write-Host '  (the model extra was skipped: re-run without -NoModels for face swapping)'
    } else {
        Write-Host '  faceswap-cam models download   fetch the Wan2.2-Animate weights (large; resumable)'
    }
    Write-Host '  faceswap-cam run               start the daemon by hand'
}

function Remove-OurPath([string]$Path) {
    if (Test-Path -LiteralPath $Path) {
        Invoke-Step "remove $Path" { Remove-Item -LiteralPath $Path -Recurse -Force }
        Write-Change
    }
}

function Invoke-Uninstall {
    Write-Host 'FaceSwap Cam uninstaller (Windows)'
    if ($DryRun) { Write-Host 'dry run: printing actions, changing nothing' }
    # The service is removed by the command that installed it, which lives in the venv.
    if (-not $NoService -and (Test-ServiceCommand)) {
        try {
            Invoke-Native $Entry @('service', 'uninstall')
        } catch {
            Write-Warning "faceswap-cam service uninstall failed: $_"
        }
    }
    $entries = @((Get-UserPath) -split ';' | Where-Object { $_ })
    $kept = @($entries | Where-Object { -not (Test-OurPathEntry $_) })
    if ($kept.Count -ne $entries.Count) {
        Invoke-Step "remove $BinDirForPath from your user PATH" { Set-UserPath ($kept -join ';') }
        Write-Change
    }
    if ((Test-Path -LiteralPath $Shim) -and ([IO.File]::ReadAllText($Shim) -eq $ShimText)) {
        Remove-OurPath $Shim
    } elseif (Test-Path -LiteralPath $Shim) {
        Write-Note "$Shim was changed after it was installed; leaving it"
    }
    Remove-OurPath $Venv
    foreach ($dir in @($BinDir, $Root)) {
        if ((Test-Path -LiteralPath $dir) -and -not (Get-ChildItem -LiteralPath $dir -Force)) {
            Remove-OurPath $dir
        }
    }
    if ($Purge) {
        Remove-OurPath $AppAuthorDir
    } else {
        foreach ($dir in @((Join-Path $AppDataDir 'references'), (Join-Path $AppDataDir 'models'))) {
            if (Test-Path -LiteralPath $dir) { Write-Note "keeping $dir (-Purge deletes it)" }
        }
    }
    Write-Summary 'Nothing to remove: FaceSwap Cam is not installed here.' `
        'FaceSwap Cam is uninstalled.'
    if (-not $Purge) {
        Write-Host 'Reference faces and models are kept; -Uninstall -Purge deletes them.'
    }
    Write-Note ('Unity Capture and OBS stay installed; remove them with their own uninstallers ' +
        '(Unity Capture: Install\Uninstall.bat as administrator).')
}

if ($Uninstall) { Invoke-Uninstall } else { Invoke-Install }
