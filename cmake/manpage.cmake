# punctum — the man page punctum.1, written at build time from the freshly built binary's own
# help (cmake -P; the punctum-man target of cmake/install.cmake). One source of truth: the text
# lives in src/cli (`punctum --help`, `punctum CMD --help`), so an option added there appears
# here at the next build.
#
#   cmake -DPUNCTUM=<binary> -DOUT=<punctum.1> -P manpage.cmake
#
# How help text maps to the page:
#   line 1 "punctum VERSION — SUMMARY"       NAME, and the version in the title line
#   "usage:" and its "  punctum CMD ..." lines  SYNOPSIS; each CMD's own --help becomes a
#                                            subsection of COMMANDS
#   any other "heading:" at column 0         a section of that name (EXIT STATUS, ENVIRONMENT)
#   "  TERM   description" (2+ spaces apart)  a tagged paragraph; deeper-indented lines continue it
#   other lines                              paragraphs (`code` in bold)
cmake_minimum_required(VERSION 3.18)
if(NOT PUNCTUM OR NOT OUT)
  message(FATAL_ERROR "manpage.cmake: -DPUNCTUM=<binary> and -DOUT=<file> are required")
endif()

# `punctum ARGS` -> its help text (stdout, or stderr where a command prints usage there)
function(pt_help out)
  execute_process(COMMAND ${PUNCTUM} ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE o ERROR_VARIABLE e)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "manpage.cmake: `${PUNCTUM} ${ARGN}` failed (${rc}): ${e}")
  endif()
  if(o STREQUAL "")
    set(o "${e}")
  endif()
  set(${out} "${o}" PARENT_SCOPE)
endfunction()

# Text -> list of lines. ';' '[' ']' would upset CMake lists: they travel as placeholders until
# pt_roff puts them back.
function(pt_lines text out)
  string(REPLACE ";" "@PT_SEMI@" text "${text}")
  string(REPLACE "[" "@PT_LB@" text "${text}")
  string(REPLACE "]" "@PT_RB@" text "${text}")
  string(REGEX REPLACE "\n$" "" text "${text}")
  string(REPLACE "\n" ";" text "${text}")
  set(${out} "${text}" PARENT_SCOPE)
endfunction()

# Plain text -> roff text: backslashes, hyphens (\- so options copy as ASCII), a leading dot or
# quote, the em dash, `code` in bold.
function(pt_roff text out)
  string(REPLACE "\\" "\\e" text "${text}")
  string(REPLACE "-" "\\-" text "${text}")
  string(REPLACE "—" "\\(em" text "${text}")
  string(REGEX REPLACE "`([^`]*)`" "\\\\fB\\1\\\\fR" text "${text}")
  string(REGEX REPLACE "^([.'])" "\\\\&\\1" text "${text}")
  string(REPLACE "@PT_SEMI@" ";" text "${text}")
  string(REPLACE "@PT_LB@" "[" text "${text}")
  string(REPLACE "@PT_RB@" "]" text "${text}")
  set(${out} "${text}" PARENT_SCOPE)
endfunction()

# "  punctum CMD rest" -> "\fBpunctum CMD\fR rest"
function(pt_synopsis_line line out)
  string(STRIP "${line}" line)
  pt_roff("${line}" r)
  string(REGEX REPLACE "^(punctum( [a-z]+)?)" "\\\\fB\\1\\\\fR" r "${r}")
  set(${out} "${r}\n" PARENT_SCOPE)
endfunction()

# Body lines of a section -> roff: tagged paragraphs for "TERM  description" lines (options,
# variables, exit codes), continuation lines joined to them, everything else as paragraphs.
function(pt_body lines out)
  set(roff "")
  set(mode "") # "item" after a tagged paragraph, "prose" inside a paragraph
  foreach(line IN LISTS lines)
    string(STRIP "${line}" text)
    string(FIND "${line}" "${text}" nind) # the indentation
    string(FIND "${text}" "  " gap)
    if(text STREQUAL "")
      set(mode "")
    elseif(nind GREATER 3 AND mode STREQUAL "item")
      pt_roff("${text}" r)
      string(APPEND roff "${r}\n")
    elseif(nind GREATER 0 AND (gap GREATER 0 OR text MATCHES "^-"))
      if(gap GREATER 0)
        string(SUBSTRING "${text}" 0 ${gap} term)
        string(SUBSTRING "${text}" ${gap} -1 desc)
        string(STRIP "${desc}" desc)
      else()
        set(term "${text}")
        set(desc "")
      endif()
      pt_roff("${term}" term)
      string(REGEX REPLACE "^([^ ]+)" "\\\\fB\\1\\\\fR" term "${term}")
      pt_roff("${desc}" desc)
      string(APPEND roff ".TP\n${term}\n")
      if(NOT desc STREQUAL "")
        string(APPEND roff "${desc}\n")
      endif()
      set(mode "item")
    else()
      if(NOT mode STREQUAL "prose")
        string(APPEND roff ".PP\n")
      endif()
      pt_roff("${text}" r)
      string(APPEND roff "${r}\n")
      set(mode "prose")
    endif()
  endforeach()
  set(${out} "${roff}" PARENT_SCOPE)
endfunction()

# One subcommand's --help -> a COMMANDS subsection: its usage lines, then its body.
function(pt_command cmd out)
  pt_help(help ${cmd} --help)
  pt_lines("${help}" lines)
  set(usage "")
  set(body "")
  foreach(line IN LISTS lines)
    if(line MATCHES "^usage: *(.*)$")
      pt_synopsis_line("${CMAKE_MATCH_1}" s)
      string(APPEND usage "${s}")
    elseif(body STREQUAL "" AND line MATCHES "^ +punctum ")
      pt_synopsis_line("${line}" s)
      string(APPEND usage "${s}")
    else()
      list(APPEND body "${line}")
    endif()
  endforeach()
  pt_body("${body}" roff)
  set(${out} ".SS \"punctum ${cmd}\"\n.nf\n${usage}.fi\n${roff}" PARENT_SCOPE)
endfunction()

# ---- the main help ----------------------------------------------------------------------------
pt_help(main --help)
pt_lines("${main}" lines)
list(POP_FRONT lines first)
if(NOT first MATCHES "^punctum ([^ ]+) — (.*)$")
  message(FATAL_ERROR "manpage.cmake: `punctum --help` does not start with "
                      "'punctum VERSION — SUMMARY': ${first}")
endif()
set(version "${CMAKE_MATCH_1}")
pt_roff("${CMAKE_MATCH_2}" summary)

set(synopsis "")
set(description "")
set(commands "")
set(sections "")
set(section "")      # the heading being read ("" outside one)
set(section_lines "")
macro(pt_flush_section)
  if(NOT section STREQUAL "" AND NOT section STREQUAL "USAGE")
    pt_body("${section_lines}" r)
    string(APPEND sections ".SH ${section}\n${r}")
  endif()
  set(section_lines "")
endmacro()
foreach(line IN LISTS lines)
  if(line MATCHES "^([a-z][a-z ]*):$")
    pt_flush_section()
    string(TOUPPER "${CMAKE_MATCH_1}" section)
  elseif(section STREQUAL "USAGE" AND line MATCHES "^ +punctum ")
    pt_synopsis_line("${line}" s)
    string(APPEND synopsis "${s}")
    if(line MATCHES "^ +punctum ([a-z]+)")
      list(APPEND commands ${CMAKE_MATCH_1})
    endif()
  elseif(section STREQUAL "" AND line STREQUAL "")
    list(APPEND description "")
  elseif(line MATCHES "^[^ ]")
    pt_flush_section()
    set(section "")
    list(APPEND description "${line}")
  elseif(NOT section STREQUAL "")
    list(APPEND section_lines "${line}")
  endif()
endforeach()
pt_flush_section()
if(NOT commands)
  message(FATAL_ERROR "manpage.cmake: `punctum --help` lists no 'usage:' lines")
endif()
list(REMOVE_DUPLICATES commands)
pt_body("${description}" description)

set(command_sections "")
foreach(cmd IN LISTS commands)
  pt_command(${cmd} s)
  string(APPEND command_sections "${s}")
endforeach()

string(TIMESTAMP date "%Y-%m-%d" UTC) # honours SOURCE_DATE_EPOCH
pt_roff("${version}" version_roff)
file(WRITE "${OUT}.tmp" ".\\\" -*- coding: UTF-8 -*-
.\\\" Generated at build time by cmake/manpage.cmake from `punctum --help` and
.\\\" `punctum COMMAND --help` (src/cli); do not edit.
.TH PUNCTUM 1 \"${date}\" \"punctum ${version_roff}\" \"User Commands\"
.SH NAME
punctum \\- ${summary}
.SH SYNOPSIS
.nf
${synopsis}.fi
.SH DESCRIPTION
\\fBpunctum\\fR runs a transformer language model (a Hugging Face model directory) over the
prompt pairs of a JSONL file and writes one HDF5 dataset of statistics.
${description}.SH COMMANDS
${command_sections}${sections}.SH SEE ALSO
\\fBpunctum\\-verify\\-model\\fR MODEL_DIR (compares punctum with Hugging Face transformers
on a model; \\fB\\-\\-help\\fR lists its options),
\\fBpython3 \\-m punctum report\\fR FILE.h5 (the Python analysis package),
README.md in the documentation directory (/usr/share/doc/punctum when installed from the package).
")
file(RENAME "${OUT}.tmp" "${OUT}")
